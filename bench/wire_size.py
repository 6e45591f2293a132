"""CPU benchmark: bytes on the wire per ad, by format and transport, against the prototype's base64 PNG in JSON.

The images are real `deliver` outputs (labels included) of a grainy photo-like render; the copy is a
template-length Korean caption. Nothing is sent: sizes are the serialized messages a call would carry.

Run: .venv/bin/python -m bench.wire_size [--sizes 1080x1350 1080x1920] [--variants 1 4]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import json_format

from adgen.ad.v1 import ad_service_pb2 as ad_pb
from adgen.type.v1 import image_pb2
from adgen_orchestrator.imaging import deliver
from adgen_orchestrator.message_size import predicted_response_bytes
from adgen_orchestrator.sizing import Size, SizeRules, generation_size
from bench.image_encode import LABEL, render

MIB = 1024 * 1024
GRPC_FRAME = 5  # gRPC's length prefix a message.
CLIENT_DEFAULT_LIMIT = 4 * MIB  # grpcurl's and grpc-js's default receive limit.
COPY = ad_pb.AdCopy(
    caption="여름 느낌 가득한 딸기 생과일 주스로 더위를 날려 보세요! 매일 아침 들여온 딸기를 그대로 갈아 만들어요. "
    * 3,
    hook="여름 느낌 가득한 딸기 생과일 주스로 더위를 날려 보세요!",
    hashtags=["딸기주스", "생과일주스", "여름음료", "카페", "하루카페"],
    headline="여름엔 딸기",
    alt_text="얼음이 든 유리잔에 담긴 딸기 생과일 주스",
    written_by="template/offline-template-v1",
)


@dataclass(frozen=True)
class Row:
    name: str
    bytes: int


def _ad(size: Size, variants: int, image_format: image_pb2.ImageFormat.ValueType) -> ad_pb.CreateAdResponse:
    rendered = render("photo+grain", generation_size(size, SizeRules()))
    images = []
    for index in range(variants):
        # The same picture per variant: sizes, not pixels, are measured here.
        image = deliver(rendered, size, image_format, LABEL).image
        images.append(ad_pb.AdImage(variant_index=index, image=image, seed=7 + index, image_prompt=LABEL.prompt))
    return ad_pb.CreateAdResponse(copy=COPY, images=images, model_id="flux2-klein-4b", request_id="r" * 32)


def _prototype_json(size: Size, variants: int) -> int:
    """The prototype's answer: one JSON body with each image as a base64 PNG (Pillow's default level 6)."""
    rendered = render("photo+grain", generation_size(size, SizeRules())).resize((size.width, size.height))
    buffer = io.BytesIO()
    rendered.save(buffer, "PNG")
    picture = base64.b64encode(buffer.getvalue()).decode()
    body = {"caption": COPY.caption, "hashtags": list(COPY.hashtags), "images": [picture] * variants}
    return len(json.dumps(body, ensure_ascii=False).encode())


def _streamed(ad: ad_pb.CreateAdResponse) -> tuple[int, int, int]:
    """Bytes of a StreamCreateAd (copy, each image, the result) without and with repeated bytes, and its largest
    message."""
    events = [ad_pb.StreamCreateAdResponse(copy=ad.copy)]
    events += [ad_pb.StreamCreateAdResponse(image=image) for image in ad.images]
    slim = ad_pb.CreateAdResponse()
    slim.CopyFrom(ad)
    for image in slim.images:
        image.image.ClearField("data")
        image.data_in_stream = True
    streamed = sum(event.ByteSize() + GRPC_FRAME for event in events)
    result, repeated = ad_pb.StreamCreateAdResponse(result=slim), ad_pb.StreamCreateAdResponse(result=ad)
    largest = max(event.ByteSize() for event in events)
    return streamed + result.ByteSize() + GRPC_FRAME, streamed + repeated.ByteSize() + GRPC_FRAME, largest


def rows_for(size: Size, variants: int) -> list[Row]:
    render_size = generation_size(size, SizeRules())
    jpeg = _ad(size, variants, image_pb2.IMAGE_FORMAT_JPEG)
    png = _ad(size, variants, image_pb2.IMAGE_FORMAT_PNG)
    webp = _ad(size, variants, image_pb2.IMAGE_FORMAT_WEBP)
    streamed, repeated, largest = _streamed(jpeg)
    return [
        Row("prototype: base64 PNG in JSON", _prototype_json(size, variants)),
        Row("CreateAd gRPC, JPEG (default)", jpeg.ByteSize() + GRPC_FRAME),
        Row("CreateAd gRPC, WebP", webp.ByteSize() + GRPC_FRAME),
        Row("CreateAd gRPC, PNG", png.ByteSize() + GRPC_FRAME),
        Row("CreateAd HTTP JSON, JPEG (base64)", len(json_format.MessageToJson(jpeg, indent=None).encode())),
        Row("StreamCreateAd, JPEG: result refers", streamed),
        Row("StreamCreateAd, JPEG: result repeated (before)", repeated),
        Row("  its largest message", largest + GRPC_FRAME),
        Row("predicted bound, JPEG unary", predicted_response_bytes([size] * variants, image_pb2.IMAGE_FORMAT_JPEG)),
        Row("predicted bound, PNG unary", predicted_response_bytes([size] * variants, image_pb2.IMAGE_FORMAT_PNG)),
        Row(f"raw hop diffusion → orchestrator ({render_size.width}x{render_size.height})", 3 * render_size.area),
    ]


def print_table(size: Size, variants: int, rows: list[Row]) -> None:
    base = rows[0].bytes
    print(f"\n== {size.width}x{size.height}, {variants} variant{'s' if variants > 1 else ''} ==")
    header = f"{'what':52} {'bytes':>10} {'MiB':>7} {'× prototype':>12} {'≤ 4 MiB':>8}"
    print(header)
    print("-" * len(header))
    for row in rows:
        fits = "yes" if row.bytes <= CLIENT_DEFAULT_LIMIT else "no"
        print(f"{row.name:52} {row.bytes:10d} {row.bytes / MIB:7.2f} {row.bytes / base:12.3f} {fits:>8}")


def _size(text: str) -> Size:
    width, height = text.lower().split("x")
    return Size(int(width), int(height))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=_size, default=[Size(1080, 1350), Size(1080, 1920)])
    parser.add_argument("--variants", nargs="+", type=int, default=[1, 4])
    options = parser.parse_args()
    print("$ " + shlex.join([Path(sys.executable).name, "-m", "bench.wire_size", *sys.argv[1:]]))
    for size in options.sizes:
        for variants in options.variants:
            print_table(size, variants, rows_for(size, variants))
    print(
        "\n≤ 4 MiB: fits grpcurl's and grpc-js's default receive limit. The raw hop is one image's message between"
        " the services (per image, not per ad)."
    )


if __name__ == "__main__":
    main()
