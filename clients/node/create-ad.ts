#!/usr/bin/env node
// Creates an ad through the AdGen AdService with the typed client generated in gen/ (buf generate):
// streams progress, then saves the images and the copy as ad.json. Errors print their google.rpc details.
//
//   npm run build --prefix clients/node
//   node clients/node/dist/create-ad.js --target 127.0.0.1:50051 --out out/node "여름 느낌 딸기 생과일 주스"
//
// An orchestrator with TLS and authentication on: --ca (or --tls for the system's roots), and the bearer
// token from ADGEN_TOKEN (never a flag, so it stays out of the process list):
//
//   ADGEN_TOKEN=... node clients/node/dist/create-ad.js --target ads.example.com:50051 --ca ca.pem "딸기 주스"
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { isIP } from "node:net";
import { join } from "node:path";
import { parseArgs } from "node:util";

import { create, toJson } from "@bufbuild/protobuf";
import { durationMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";

import {
  type AdImage,
  AdCopySchema,
  AdService,
  CreateAdRequestSchema,
  type CreateAdResponse,
  type VariantProgress,
} from "./gen/adgen/ad/v1/ad_service_pb.js";
import { Placement } from "./gen/adgen/type/v1/ad_pb.js";
import { ImageFormat } from "./gen/adgen/type/v1/image_pb.js";
import { ProgressStage } from "./gen/adgen/type/v1/progress_pb.js";
import {
  BadRequestSchema,
  ErrorInfoSchema,
  ResourceInfoSchema,
  RetryInfoSchema,
} from "./gen/google/rpc/error_details_pb.js";

const EXTENSIONS: Partial<Record<ImageFormat, string>> = {
  [ImageFormat.PNG]: "png",
  [ImageFormat.JPEG]: "jpg",
  [ImageFormat.WEBP]: "webp",
};
// Images arrive whole in one message; gRPC's 4 MiB default is too small for large PNGs.
const MAX_MESSAGE_BYTES = 64 * 1024 * 1024;

interface Options {
  target: string;
  tls: boolean;
  ca: string | undefined;
  token: string;
  out: string;
  width: number;
  height: number;
  steps: number | undefined;
  model: string;
  timeoutMs: number;
  keyword: string;
}

function parseOptions(): Options {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      target: { type: "string", default: process.env.ADGEN_TARGET || "127.0.0.1:50051" },
      tls: { type: "boolean", default: false },
      ca: { type: "string" },
      out: { type: "string", default: "out/node" },
      width: { type: "string", default: "0" },
      height: { type: "string", default: "0" },
      steps: { type: "string" },
      model: { type: "string", default: "" },
      timeout: { type: "string", default: "600" },
    },
  });
  return {
    target: values.target,
    tls: values.tls || values.ca !== undefined,
    ca: values.ca,
    token: (process.env.ADGEN_TOKEN ?? "").trim(),
    out: values.out,
    width: Number(values.width),
    height: Number(values.height),
    steps: values.steps === undefined ? undefined : Number(values.steps),
    model: values.model,
    timeoutMs: Number(values.timeout) * 1000,
    keyword: positionals.join(" "),
  };
}

/** The gRPC name of a status code, e.g. INVALID_ARGUMENT (Connect's enum says InvalidArgument). */
function grpcCodeName(code: Code): string {
  return Code[code].replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}

/** A readable error: code and message, then the google.rpc details decoded from grpc-status-details-bin. */
function describeError(error: ConnectError): string {
  const lines = [`${grpcCodeName(error.code)}: ${error.rawMessage}`];
  for (const info of error.findDetails(ErrorInfoSchema)) lines.push(`  reason: ${info.reason} (${info.domain})`);
  for (const badRequest of error.findDetails(BadRequestSchema)) {
    for (const v of badRequest.fieldViolations) lines.push(`  field ${v.field}: ${v.description}`);
  }
  for (const retry of error.findDetails(RetryInfoSchema)) {
    if (retry.retryDelay) lines.push(`  retry after ${durationMs(retry.retryDelay) / 1000}s`);
  }
  for (const resource of error.findDetails(ResourceInfoSchema)) {
    lines.push(`  resource: ${resource.resourceType} ${resource.resourceName}`);
  }
  return lines.join("\n");
}

function describeProgress({ variantIndex, progress }: VariantProgress): string {
  if (!progress) return `variant ${variantIndex}: progress`;
  const stage = ProgressStage[progress.stage].toLowerCase();
  if (progress.stage === ProgressStage.DENOISING) {
    return `variant ${variantIndex}: denoising ${progress.step}/${progress.totalSteps}`;
  }
  if (progress.stage === ProgressStage.QUEUED) return `variant ${variantIndex}: queued at position ${progress.queuePosition}`;
  return `variant ${variantIndex}: ${stage} ${progress.modelId}`;
}

/** Writes each image and ad.json (snake_case keys, as the proto names them) and returns the image count. */
function saveAd(ad: CreateAdResponse, keyword: string, out: string): number {
  const files = ad.images.map((adImage) => {
    const image = adImage.image;
    const name = `variant-${adImage.variantIndex}.${(image && EXTENSIONS[image.format]) ?? "bin"}`;
    writeFileSync(join(out, name), image?.data ?? new Uint8Array());
    return {
      file: name,
      width: image?.width ?? 0,
      height: image?.height ?? 0,
      seed: adImage.seed.toString(), // uint64: a string, as JSON numbers cannot hold every value.
      image_prompt: adImage.imagePrompt,
    };
  });
  const copy = ad.copy ? toJson(AdCopySchema, ad.copy, { useProtoFieldName: true, alwaysEmitImplicit: true }) : null;
  const summary = { keyword, request_id: ad.requestId, model_id: ad.modelId, copy, images: files };
  writeFileSync(join(out, "ad.json"), JSON.stringify(summary, null, 2));
  return files.length;
}

/** Whether host:port (or [v6]:port) names this machine: a token may go there without TLS. */
function isLoopback(target: string): boolean {
  const host = target.startsWith("[") ? target.slice(1, target.indexOf("]")) : target.replace(/:\d+$/, "");
  if (host === "localhost") return true;
  if (isIP(host) === 4) return host.startsWith("127.");
  return host === "::1";
}

/** Sends the token as `authorization: Bearer <token>` on every call. */
function bearer(token: string): Interceptor {
  return (next) => async (request) => {
    request.header.set("authorization", `Bearer ${token}`);
    return await next(request);
  };
}

function createTransport(options: Options) {
  if (options.token && !options.tls && !isLoopback(options.target)) {
    // The same rule as the Python SDK: a token never travels in plaintext off this machine.
    throw new Error(`ADGEN_TOKEN is only sent over TLS or to a loopback address: pass --tls or --ca FILE`);
  }
  return createGrpcTransport({
    baseUrl: `${options.tls ? "https" : "http"}://${options.target}`,
    readMaxBytes: MAX_MESSAGE_BYTES,
    writeMaxBytes: MAX_MESSAGE_BYTES,
    nodeOptions: options.ca === undefined ? {} : { ca: readFileSync(options.ca) },
    interceptors: options.token ? [bearer(options.token)] : [],
  });
}

async function createAd(options: Options): Promise<void> {
  const transport = createTransport(options);
  const client = createClient(AdService, transport);
  const request = create(CreateAdRequestSchema, {
    keyword: options.keyword,
    placement: Placement.FEED_SQUARE,
    width: options.width,
    height: options.height,
    modelId: options.model,
    numInferenceSteps: options.steps,
  });
  mkdirSync(options.out, { recursive: true });
  const stream = client.streamCreateAd({ request }, { timeoutMs: options.timeoutMs });
  // Read to the end rather than break at the result: an abandoned call keeps the HTTP/2 session (and node) alive.
  let saved = false;
  // The result does not repeat image bytes already streamed (data_in_stream): keep them to put back.
  const streamed = new Map<string, Uint8Array>();
  const imageKey = (adImage: AdImage) => `${adImage.variantIndex}/${adImage.placement}`;
  for await (const { event } of stream) {
    if (event.case === "copy") console.log(`copy ready: ${event.value.hook}`);
    if (event.case === "progress") console.log(describeProgress(event.value));
    if (event.case === "image") {
      if (event.value.image) streamed.set(imageKey(event.value), event.value.image.data);
      console.log(`variant ${event.value.variantIndex}: image ready`);
    }
    if (event.case === "result") {
      for (const adImage of event.value.images) {
        const data = streamed.get(imageKey(adImage));
        if (adImage.dataInStream && adImage.image && data) adImage.image.data = data;
      }
      const count = saveAd(event.value, options.keyword, options.out);
      console.log(`saved ${count} image(s) and ad.json to ${options.out}`);
      saved = true;
    }
  }
  if (!saved) throw new Error("the server ended the stream without a result");
}

async function main(): Promise<void> {
  try {
    await createAd(parseOptions());
  } catch (error) {
    console.error(error instanceof ConnectError ? describeError(error) : String(error));
    process.exitCode = 1;
  }
}

await main();
