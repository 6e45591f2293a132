"""Turns an AdGenError into a Korean message a shop owner understands, with what to do next."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import grpc

from adgen_client.errors import AdGenError

_ASK_ADMIN = "계속 같은 문제가 생기면 관리자에게 알려 주세요."
# How the orchestrator describes a photo over its byte or pixel limit (adgen_runtime.photos.open_photo);
# tests/unit/web/test_photo_limits.py holds the two together.
_OVER_A_LIMIT = re.compile(r"\blarger than\b|\bmore than \d+ pixels\b")
_TOO_ELONGATED = re.compile(r"\baspect ratio\b")
_ASPECT_LIMIT = re.compile(r"\bup to (\d+(?:\.\d+)?):1\b")
# The request fields that carry photos: EditAd's image and CreateAd's product photos.
_PHOTO_FIELDS = ("image", "product_photos")

# What happened and what to do, by the ErrorInfo reason the server sent.
_BY_REASON: dict[str, tuple[str, str]] = {
    "EMPTY_KEYWORD": (
        "광고할 상품 키워드가 비어 있어요.",
        "예: '여름 느낌 딸기 생과일 주스'처럼 상품을 한 줄로 적어 주세요.",
    ),
    "INVALID_SIZE": (
        "요청한 이미지 크기로는 만들 수 없어요.",
        "게재 위치를 다시 고른 뒤 기본 크기로 다시 시도해 주세요.",
    ),
    "INVALID_IMAGE": (
        "올린 사진 파일을 읽을 수 없어요.",
        "PNG, JPG, WEBP 사진을 다시 올려 주세요. 파일이 깨졌거나 너무 크면 다른 사진으로 시도해 주세요.",
    ),
    "MODEL_NOT_FOUND": (
        "설정된 이미지 모델을 찾을 수 없어요.",
        "관리자에게 이미지 모델 설정을 확인해 달라고 알려 주세요.",
    ),
    "MODEL_TASK_UNSUPPORTED": (
        "설정된 이미지 모델은 이 작업을 할 수 없어요.",
        "관리자에게 모델 설정을 확인해 달라고 알려 주세요.",
    ),
    "MODEL_NOT_CACHED": (
        "이미지 모델이 아직 서버에 준비되지 않았어요.",
        "관리자에게 모델 파일을 내려받아 달라고 알려 주세요.",
    ),
    "MODEL_LOAD_FAILED": ("이미지 모델을 불러오지 못했어요.", f"잠시 후 다시 시도해 주세요. {_ASK_ADMIN}"),
    "PLACEMENT_UNSUPPORTED": (
        "지금 서버 장비로는 이 이미지 모델을 실행할 수 없어요.",
        "관리자에게 서버 설정을 확인해 달라고 알려 주세요.",
    ),
    "UNLOAD_INCOMPLETE": ("이미지 서버가 정리 중이에요.", f"몇 분 뒤에 다시 시도해 주세요. {_ASK_ADMIN}"),
    "JOB_CANCELLED": ("작업이 중간에 취소되었어요.", "다시 시도해 주세요."),
    "UPSTREAM_UNAVAILABLE": (
        "광고를 만드는 서버에 잠시 연결할 수 없어요.",
        f"1~2분 뒤에 다시 시도해 주세요. {_ASK_ADMIN}",
    ),
    "UPSTREAM_DEADLINE_EXCEEDED": (
        "생성이 너무 오래 걸려 중단되었어요.",
        "시안 개수를 줄이거나 잠시 후 다시 시도해 주세요.",
    ),
    "LLM_REFUSED": (
        "문구를 쓰는 AI가 이 키워드로는 광고 문구를 쓰지 않았어요.",
        "키워드를 다른 표현으로 바꿔 다시 시도해 주세요.",
    ),
    "LLM_BAD_OUTPUT": ("광고 문구를 제대로 만들지 못했어요.", "한 번 더 시도해 주세요."),
    "LLM_UNAVAILABLE": ("문구를 쓰는 AI에 지금 연결할 수 없어요.", "잠시 후 다시 시도해 주세요."),
    "BANNED_CLAIM": (
        "식품 광고에 쓸 수 없는 표현(질병 예방·치료 같은 효능)이 빠지지 않아 문구를 만들지 못했어요.",
        "키워드나 행사 문구에서 효능·효과 표현을 빼고 다시 시도해 주세요.",
    ),
    "NOT_READY": ("서버가 켜지는 중이거나 점검 중이에요.", "1~2분 뒤에 다시 시도해 주세요."),
    "REQUEST_ID_REUSED": (
        "같은 요청 번호로 다른 내용이 이미 접수되었어요.",
        "페이지를 새로고침한 뒤 다시 시도해 주세요.",
    ),
    "FONT_UNAVAILABLE": (
        "이미지에 한글을 넣을 글꼴이 서버에 없어요.",
        f"'헤드라인 글자 넣기'와 'AI 생성 표시'를 끄면 지금 바로 만들 수 있어요. {_ASK_ADMIN}",
    ),
    "LLM_MISCONFIGURED": (
        "문구를 쓰는 AI의 연결 설정에 문제가 있어요.",
        "관리자에게 AI 연결 설정(API 키)을 확인해 달라고 알려 주세요.",
    ),
    "MESSAGE_TOO_LARGE": (
        "보낸 내용이 서버가 받을 수 있는 크기보다 커요.",
        "더 작은 사진으로 다시 시도해 주세요.",
    ),
}

# The same, by gRPC code, for statuses without a reason we know (e.g. the server is not running).
_BY_CODE: dict[grpc.StatusCode, tuple[str, str]] = {
    grpc.StatusCode.INVALID_ARGUMENT: ("입력한 내용을 처리할 수 없어요.", "입력한 내용을 확인하고 다시 시도해 주세요."),
    grpc.StatusCode.UNAVAILABLE: (
        "광고 서버에 연결할 수 없어요.",
        f"인터넷 연결과 서버가 켜져 있는지 확인한 뒤 잠시 후 다시 시도해 주세요. {_ASK_ADMIN}",
    ),
    grpc.StatusCode.DEADLINE_EXCEEDED: (
        "생성이 너무 오래 걸려 중단되었어요.",
        "시안 개수를 줄이거나 잠시 후 다시 시도해 주세요.",
    ),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (
        "요청이 너무 크거나 서버가 바빠요.",
        "사진 크기를 줄이거나 잠시 후 다시 시도해 주세요.",
    ),
    grpc.StatusCode.CANCELLED: ("작업이 중간에 취소되었어요.", "다시 시도해 주세요."),
    # The page's own token (ADGEN_WEB_TOKEN_FILE) was refused: only whoever runs the page can fix that.
    grpc.StatusCode.UNAUTHENTICATED: (
        "이 페이지가 광고 서버에 접속 허가를 받지 못했어요.",
        "관리자에게 페이지의 접속 토큰 설정을 확인해 달라고 알려 주세요.",
    ),
    grpc.StatusCode.PERMISSION_DENIED: (
        "이 페이지에는 그 작업을 할 권한이 없어요.",
        "관리자에게 페이지의 접속 권한을 확인해 달라고 알려 주세요.",
    ),
}

# Korean names of request fields, for "check these fields" messages.
_FIELD_LABELS: dict[str, str] = {
    "keyword": "상품 키워드",
    "instruction": "편집 요청",
    "image": "사진",
    "width": "이미지 크기",
    "height": "이미지 크기",
    "variant_count": "시안 개수",
    "num_inference_steps": "생성 단계 수",
    "tone": "말투",
    "placement": "게재 위치",
    "placements": "게재 위치",
    "product_photos": "상품 사진",
    "brand": "브랜드",
    "facts": "가게 정보",
    "request_id": "요청 번호",
    "seed": "시드",
    "model_id": "이미지 모델",
    "output_format": "파일 형식",
}


@dataclass(frozen=True)
class UserMessage:
    """An error told to a person: what happened, what to do next, and the id support can look up."""

    problem: str
    next_step: str
    request_id: str = ""

    @property
    def text(self) -> str:
        """The message as one paragraph, with the request id when there is one."""
        tail = f" (요청 번호: {self.request_id})" if self.request_id else ""
        return f"{self.problem} {self.next_step}{tail}"


def field_labels(error: AdGenError) -> list[str]:
    """Korean names of the fields the server rejected, each once, in the server's order."""
    labels: list[str] = []
    for violation in error.field_violations:
        label = _FIELD_LABELS.get(_leaf(violation.field), "입력 항목")
        if label not in labels:
            labels.append(label)
    return labels


def megabytes(size_bytes: int) -> str:
    """A byte limit as the page states it, in Streamlit's unit: 20971520 → "20MB"."""
    return f"{size_bytes / (1024 * 1024):.3g}MB"


def photo_too_large(limit_bytes: int | None = None, request_id: str = "") -> UserMessage:
    """The message for a photo over the size limit, told before any call or relayed from the server."""
    limit = f" (최대 {megabytes(limit_bytes)})" if limit_bytes else ""
    return UserMessage(
        "사진이 너무 커요.",
        f"파일 용량이나 가로·세로 크기를 줄인 사진{limit}으로 다시 올려 주세요. "
        "휴대폰 사진은 스크린숏으로 올려도 돼요.",
        request_id,
    )


def _photo_refusal(error: AdGenError, pattern: re.Pattern[str]) -> str | None:
    """The description of the INVALID_IMAGE violation on the photo that `pattern` finds, if any."""
    if error.reason != "INVALID_IMAGE":
        return None
    return next(
        (
            v.description
            for v in error.field_violations
            if _leaf(v.field) in _PHOTO_FIELDS and pattern.search(v.description)
        ),
        None,
    )


def is_photo_too_large(error: AdGenError) -> bool:
    """Whether the server refused the photo for its size, not because it could not read it."""
    return _photo_refusal(error, _OVER_A_LIMIT) is not None


def describe_error(error: AdGenError, request_id: str = "", *, photo_limit_bytes: int | None = None) -> UserMessage:
    """The Korean message for a failed call; `request_id` is the caller's, used when the server named none."""
    rid = error.request_id or request_id
    if is_photo_too_large(error):
        return photo_too_large(photo_limit_bytes, rid)
    elongated = _photo_refusal(error, _TOO_ELONGATED)
    if elongated is not None:
        limit = _ASPECT_LIMIT.search(elongated)
        ratio = f" {limit.group(1)}:1을 넘지 않게" if limit else " 덜 길쭉하게"
        return UserMessage("사진이 너무 길쭉해요.", f"가로·세로 비율이{ratio} 잘라서 다시 올려 주세요.", rid)
    if error.reason == "QUEUE_FULL":
        return UserMessage("지금 주문이 몰려 이미지 생성 대기열이 가득 찼어요.", _retry_hint(error.retry_after_s), rid)
    if error.reason == "RATE_LIMITED":
        return UserMessage("짧은 시간에 요청이 너무 많았어요.", _retry_hint(error.retry_after_s), rid)
    if error.reason in _BY_REASON:
        problem, next_step = _BY_REASON[error.reason]
        return UserMessage(problem, next_step, rid)
    if error.code == grpc.StatusCode.INVALID_ARGUMENT and error.field_violations:
        fields = ", ".join(field_labels(error))
        return UserMessage(f"입력한 내용 중 확인이 필요한 항목이 있어요: {fields}.", "고친 뒤 다시 시도해 주세요.", rid)
    if error.code in _BY_CODE:
        problem, next_step = _BY_CODE[error.code]
        return UserMessage(problem, next_step, rid)
    ask = "요청 번호를 관리자에게" if rid else "관리자에게"
    return UserMessage("예상하지 못한 문제가 생겼어요.", f"다시 시도해 보시고, 계속되면 {ask} 알려 주세요.", rid)


def _leaf(field: str) -> str:
    """The request field a violation names: "request.image.data" → "image"."""
    return field.removeprefix("request.").split(".")[0].split("[")[0]


def _retry_hint(retry_after_s: float | None) -> str:
    if retry_after_s is None or retry_after_s <= 0:
        return "잠시 후 다시 시도해 주세요."
    return f"{math.ceil(retry_after_s)}초 뒤에 다시 시도해 주세요."
