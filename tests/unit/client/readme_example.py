from pathlib import Path

from adgen_client import AdGenClient, BadRequest, Facts, ProgressEvent, Stage


def show(event: ProgressEvent) -> None:
    if event.stage is Stage.DENOISING:
        print(f"variant {event.variant_index + 1}: step {event.step}/{event.total_steps}")


with AdGenClient("127.0.0.1:50051", max_retries=2) as client:
    try:
        ad = client.create_ad_and_wait(
            "여름 느낌 딸기 생과일 주스",
            variant_count=2,
            caption_length="short",
            facts=Facts(shop_name="하루카페", price="5,500원"),
            on_progress=show,
        )
    except BadRequest as error:
        for violation in error.field_violations:
            print(f"{violation.field}: {violation.description}")
        raise
    print(ad.copy.caption, list(ad.copy.hashtags))
    Path("ad.jpg").write_bytes(ad.images[0].image.data)  # JPEG unless output_format says otherwise
