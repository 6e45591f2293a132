#!/usr/bin/env node
// Creates an ad through the AdGen AdService from Node.js, loading the repository's protos at
// run time (no codegen): streams progress, then saves the images and the copy as ad.json.
//
//   node clients/node/create_ad.js --target 127.0.0.1:50051 --out out/node "여름 느낌 딸기 생과일 주스"
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";
import protobuf from "protobufjs";

const PROTO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../../protos");
const EXTENSIONS = { IMAGE_FORMAT_PNG: "png", IMAGE_FORMAT_JPEG: "jpg", IMAGE_FORMAT_WEBP: "webp" };

// Just enough of google.rpc to read the rich error details the services attach.
const RPC_TYPES = protobuf.Root.fromJSON({
  nested: {
    google: { nested: { rpc: { nested: {
      Status: { fields: { code: { type: "int32", id: 1 }, message: { type: "string", id: 2 },
                          details: { rule: "repeated", type: "google.protobuf.Any", id: 3 } } },
      ErrorInfo: { fields: { reason: { type: "string", id: 1 }, domain: { type: "string", id: 2 } } },
      BadRequest: { fields: { fieldViolations: { rule: "repeated", type: "FieldViolation", id: 1 } },
                    nested: { FieldViolation: { fields: { field: { type: "string", id: 1 },
                                                          description: { type: "string", id: 2 } } } } },
    } },
    protobuf: { nested: { Any: { fields: { type_url: { type: "string", id: 1 }, value: { type: "bytes", id: 2 } } } } } } },
  },
});

function loadAdService() {
  const definition = protoLoader.loadSync("adgen/ad/v1/ad_service.proto", {
    includeDirs: [PROTO_ROOT],
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  return grpc.loadPackageDefinition(definition).adgen.ad.v1.AdService;
}

function describeError(error) {
  const lines = [`${grpc.status[error.code]}: ${error.details}`];
  const [raw] = error.metadata?.get("grpc-status-details-bin") ?? [];
  if (!raw) return lines.join("\n");
  const status = RPC_TYPES.lookupType("google.rpc.Status").decode(raw);
  for (const detail of status.details) {
    const typeName = detail.type_url.split("/").pop();
    // Details this script does not describe (RetryInfo, ResourceInfo, ...) are skipped, not fatal.
    const type = RPC_TYPES.lookup(typeName);
    if (!(type instanceof protobuf.Type)) continue;
    const decoded = type.decode(detail.value);
    if (typeName === "google.rpc.ErrorInfo") lines.push(`  reason: ${decoded.reason} (${decoded.domain})`);
    if (typeName === "google.rpc.BadRequest") {
      for (const v of decoded.fieldViolations) lines.push(`  field ${v.field}: ${v.description}`);
    }
  }
  return lines.join("\n");
}

function describeProgress({ variant_index: variant, progress }) {
  const stage = progress.stage.replace("PROGRESS_STAGE_", "").toLowerCase();
  if (stage === "denoising") return `variant ${variant}: denoising ${progress.step}/${progress.total_steps}`;
  if (stage === "queued") return `variant ${variant}: queued at position ${progress.queue_position}`;
  return `variant ${variant}: ${stage} ${progress.model_id}`;
}

function main() {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      target: { type: "string", default: "127.0.0.1:50051" },
      out: { type: "string", default: "out/node" },
      width: { type: "string", default: "0" },
      height: { type: "string", default: "0" },
      steps: { type: "string" },
      model: { type: "string", default: "" },
      timeout: { type: "string", default: "600" },
    },
  });
  const keyword = positionals.join(" ");
  const AdService = loadAdService();
  const client = new AdService(values.target, grpc.credentials.createInsecure(), {
    "grpc.max_receive_message_length": 64 * 1024 * 1024,
    "grpc.max_send_message_length": 64 * 1024 * 1024,
  });
  const request = {
    keyword,
    placement: "PLACEMENT_FEED_SQUARE",
    width: Number(values.width),
    height: Number(values.height),
    model_id: values.model,
    ...(values.steps ? { num_inference_steps: Number(values.steps) } : {}),
  };
  const deadline = new Date(Date.now() + Number(values.timeout) * 1000);
  const stream = client.StreamCreateAd({ request }, { deadline });
  mkdirSync(values.out, { recursive: true });

  let finished = false;
  stream.on("data", (event) => {
    if (event.event === "copy") console.log(`copy ready: ${event.copy.hook}`);
    if (event.event === "progress") console.log(describeProgress(event.progress));
    if (event.event === "image") console.log(`variant ${event.image.variant_index}: image ready`);
    if (event.event !== "result") return;
    finished = true;
    const ad = event.result;
    const files = ad.images.map((image) => {
      const name = `variant-${image.variant_index}.${EXTENSIONS[image.image.format] ?? "bin"}`;
      writeFileSync(join(values.out, name), image.image.data);
      return { file: name, width: image.image.width, height: image.image.height, seed: image.seed,
               image_prompt: image.image_prompt };
    });
    const summary = { keyword, request_id: ad.request_id, model_id: ad.model_id, copy: ad.copy, images: files };
    writeFileSync(join(values.out, "ad.json"), JSON.stringify(summary, null, 2));
    console.log(`saved ${files.length} image(s) and ad.json to ${values.out}`);
  });
  stream.on("error", (error) => {
    console.error(describeError(error));
    process.exitCode = 1;
  });
  stream.on("end", () => {
    if (finished) return;
    console.error("the server ended the stream without a result");
    process.exitCode = 1;
  });
}

main();
