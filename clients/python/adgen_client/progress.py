"""Typed progress events: what a stream's protobuf `Progress` says, as plain Python values."""

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
