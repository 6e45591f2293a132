"""Reading a stream: typed progress events, and the CreateAd result made whole from the images streamed before it."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from adgen.ad.v1 import ad_service_pb2 as ad_pb
from adgen.type.v1 import progress_pb2


class Stage(enum.IntEnum):
    """Where an image job is, mirroring `adgen.type.v1.ProgressStage` (same numbers)."""

    UNSPECIFIED = progress_pb2.PROGRESS_STAGE_UNSPECIFIED
    QUEUED = progress_pb2.PROGRESS_STAGE_QUEUED
    UNLOADING = progress_pb2.PROGRESS_STAGE_UNLOADING
    LOADING = progress_pb2.PROGRESS_STAGE_LOADING
    DENOISING = progress_pb2.PROGRESS_STAGE_DENOISING
    DECODING = progress_pb2.PROGRESS_STAGE_DECODING
    DONE = progress_pb2.PROGRESS_STAGE_DONE


@dataclass(frozen=True)
class ProgressEvent:
    """One progress report of one image job.

    Attributes:
        stage: the job's stage.
        variant_index: which variant of an ad (0 for an edit).
        step: denoising steps done (DENOISING).
        total_steps: denoising steps in all (DENOISING).
        queue_position: jobs ahead in the GPU queue (QUEUED).
        eta_s: the server's estimate of the seconds until the job starts (QUEUED), when it has one.
        model_id: the model being loaded (LOADING).
    """

    stage: Stage
    variant_index: int = 0
    step: int = 0
    total_steps: int = 0
    queue_position: int = 0
    eta_s: float | None = None
    model_id: str = ""

    @classmethod
    def from_proto(cls, progress: progress_pb2.Progress, variant_index: int = 0) -> ProgressEvent:
        """The event for a protobuf `Progress` (an unknown stage number reads as UNSPECIFIED)."""
        stage = Stage(progress.stage) if progress.stage in Stage._value2member_map_ else Stage.UNSPECIFIED
        return cls(
            stage=stage,
            variant_index=variant_index,
            step=progress.step,
            total_steps=progress.total_steps,
            queue_position=progress.queue_position,
            eta_s=progress.eta.ToNanoseconds() / 1e9 if progress.HasField("eta") else None,
            model_id=progress.model_id,
        )


def create_progress(event: ad_pb.StreamCreateAdResponse) -> ProgressEvent | None:
    """The progress a CreateAd stream event carries, else None."""
    if event.WhichOneof("event") != "progress":
        return None
    return ProgressEvent.from_proto(event.progress.progress, event.progress.variant_index)


def edit_progress(event: ad_pb.StreamEditAdResponse) -> ProgressEvent | None:
    """The progress an EditAd stream event carries, else None."""
    return ProgressEvent.from_proto(event.progress) if event.HasField("progress") else None


class StreamedAd:
    """Keeps the file bytes of each image a CreateAd stream carried, so the stream's result, whose images refer
    to them (`data_in_stream`), can be made whole: equal to what the one-call CreateAd returns."""

    def __init__(self) -> None:
        self._data: dict[tuple[int, int], bytes] = {}

    def whole(self, event: ad_pb.StreamCreateAdResponse) -> ad_pb.StreamCreateAdResponse:
        """`event`, with a result's referring images filled in from the images seen before (in place).

        Raises:
            LookupError: the result refers to an image the stream never carried (a server fault).
        """
        if event.HasField("image"):
            self._data[_image_key(event.image)] = event.image.image.data
        elif event.HasField("result"):
            for image in event.result.images:
                if image.data_in_stream:
                    key = _image_key(image)
                    if key not in self._data:
                        raise LookupError(f"the result refers to variant {key[0]}'s image, which the stream never sent")
                    image.image.data = self._data[key]
                    image.data_in_stream = False
        return event


def _image_key(image: ad_pb.AdImage) -> tuple[int, int]:
    return image.variant_index, image.placement
