"""GenerateCopy's brand name names the shop, and a product photo turns image prompts into scenes around it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import pytest
import regex
from openai import AsyncOpenAI

from adgen.copywriter.v1 import copywriter_service_pb2 as pb
from adgen.type.v1 import ad_pb2
from adgen_copywriter.domain import Brief
from adgen_copywriter.engine import CopyEngine
from adgen_copywriter.llm import COPY_SYSTEM_PROMPT, LlmBackend
from adgen_copywriter.template import TemplateBackend
from adgen_copywriter.validation import brief_from_request
from adgen_runtime.errors import InvalidArgument
from tests.support.fake_openai import FakeOpenAI, completion

KEYWORD = "여름 느낌 딸기 생과일 주스"
# What the template says of the product when it draws it; a scene prompt says none of it.
PRODUCT_WORDS = regex.compile(r"strawberr|juice|glass|garnish|condensation|crushed ice|drink|dessert", regex.I)
NEGATION = regex.compile(r"\b(no|not|without|avoid|never)\b", regex.IGNORECASE)


def brief(**fields: object) -> Brief:
    return brief_from_request(pb.GenerateCopyRequest(keyword=KEYWORD, **fields))  # type: ignore[arg-type]


def test_brand_name_becomes_the_shop_name_when_the_facts_have_none() -> None:
    assert brief(brand_name="  하루\t카페 ").facts.shop_name == "하루 카페"


def test_the_shop_name_the_merchant_gave_wins_over_the_brand_name() -> None:
    facts = ad_pb2.MerchantFacts(shop_name="하루카페 성수점")
    assert brief(brand_name="하루카페", facts=facts).facts.shop_name == "하루카페 성수점"


@pytest.mark.parametrize(
    ("brand_name", "words"),
    [("하루\x07카페", "control characters"), ("가" * 51, "at most 50"), ("최고카페", "cannot appear in a food ad")],
)
def test_bad_brand_names_are_invalid_arguments_on_brand_name(brand_name: str, words: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        brief(brand_name=brand_name)
    (violation,) = raised.value.field_violations
    assert violation.field == "brand_name" and words in violation.description


async def test_template_copy_names_the_brand_in_caption_hashtags_and_facts_used() -> None:
    draft = await CopyEngine(TemplateBackend()).generate_copy(brief(brand_name="하루카페"))
    assert "하루카페에서" in draft.caption
    assert "하루카페" in draft.hashtags and "하루카페" in draft.facts_used


@pytest.mark.parametrize("placement", [ad_pb2.PLACEMENT_FEED_SQUARE, ad_pb2.PLACEMENT_STORY])
@pytest.mark.parametrize("model_id", ["flux2-klein-4b", "z-image-turbo"])
async def test_template_scene_prompts_describe_the_setting_and_never_the_product(
    placement: ad_pb2.Placement.ValueType, model_id: str
) -> None:
    scenes = await CopyEngine(TemplateBackend()).generate_copy(
        brief(product_photo=True, variant_count=4, placement=placement, target_model_id=model_id)
    )
    drawn = await CopyEngine(TemplateBackend()).generate_copy(brief(variant_count=4, target_model_id=model_id))
    assert len(scenes.image_prompts) == 4 and len(set(scenes.image_prompts)) == 4
    for prompt in scenes.image_prompts:
        assert not PRODUCT_WORDS.search(prompt), prompt
        assert not NEGATION.search(prompt), prompt
        assert "open" in prompt and "product" in prompt  # The space left for the photographed product.
    assert all(PRODUCT_WORDS.search(prompt) for prompt in drawn.image_prompts)  # The check can fail.
    assert "상품 사진" in scenes.alt_text


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI().start()
    yield server
    server.stop()


@pytest.fixture
async def llm_engine(fake: FakeOpenAI) -> AsyncIterator[CopyEngine]:
    client = AsyncOpenAI(api_key="sk-test", base_url=fake.base_url, timeout=5.0, max_retries=0)
    engine = CopyEngine(LlmBackend(client, "gpt-4o-mini"))
    yield engine
    await engine.aclose()


def llm_copy(prompt: str) -> str:
    return json.dumps(
        {
            "image_prompts": [prompt],
            "caption": "하루카페의 여름 딸기 주스를 만나 보세요!",
            "hook": "하루카페의 여름 딸기 주스를 만나 보세요!",
            "hashtags": ["딸기주스", "하루카페"],
            "headline": "여름 딸기 주스",
            "alt_text": "매장 상품 사진에 AI로 배경을 만든 이미지예요.",
            "facts_used": ["하루카페"],
        },
        ensure_ascii=False,
    )


async def test_llm_is_given_the_brand_name_as_the_shop_and_may_state_it(
    fake: FakeOpenAI, llm_engine: CopyEngine
) -> None:
    fake.script(completion(llm_copy("A hero close-up of a strawberry juice on an oak counter.")))
    draft = await llm_engine.generate_copy(brief(brand_name="하루카페"))
    assert draft.facts_used == ("하루카페",)  # A vouched fact: the rules keep it.
    (sent,) = fake.received
    request = json.loads(sent.last_user_message.split("\n\n")[0].removeprefix("Ad request:\n"))
    assert request["merchant_facts"]["shop_name"] == "하루카페"
    assert "product_photo" not in request


async def test_llm_is_told_to_write_only_the_scene_around_a_product_photo(
    fake: FakeOpenAI, llm_engine: CopyEngine
) -> None:
    scene = "A light oak counter with a clear, open spot at its centre for the product, in soft window light."
    fake.script(completion(llm_copy(scene)))
    draft = await llm_engine.generate_copy(brief(product_photo=True))
    assert draft.image_prompts == (scene,)
    (sent,) = fake.received
    system = sent.body["messages"][0]["content"]
    assert system == COPY_SYSTEM_PROMPT and '"product_photo": true' in system
    assert "Never describe the product itself" in system
    request = json.loads(sent.last_user_message.split("\n\n")[0].removeprefix("Ad request:\n"))
    assert request["product_photo"] is True
    assert "describe only the scene around it, never the product" in sent.last_user_message
