"""POST /v1/images/generations through an OpenAI-compatible upstream and a Dify workflow app."""

from __future__ import annotations

import base64
import re
import subprocess

import openai
import pytest
import requests

from tests.conftest import API_KEY, ROOT
from tests.fakes.openai_upstream import PNG, Reply

UPSTREAM_KEY = "sk-image-upstream-55aa"
VALID_HEADERS = {
    "X-Output-Format": "webp",
    "X-Replicate-Seed": "42",
    "X-Replicate-Num-Inference-Steps": "30",
    "X-Replicate-Guidance-Scale": "7.5",
    "X-Replicate-Negative-Prompt": "blurry",
    "X-Replicate-Scheduler": "K_EULER",
    "X-Replicate-Prompt-Strength": "0.8",
    "X-Replicate-Safety-Checker": "no",
    "X-Replicate-Enhance-Prompt": "yes",
    "X-Replicate-Upscale": "yes",
    "X-Replicate-Upscale-Factor": "4",
    "X-Replicate-Style-Preset": "anime",
    "X-Replicate-Init-Image": "https://example.com/start.png",
    "X-Replicate-Mask": "https://example.com/mask.png",
}
VALID_OPTIONS = {
    "output_format": "webp",
    "seed": 42,
    "num_inference_steps": 30,
    "guidance_scale": 7.5,
    "negative_prompt": "blurry",
    "scheduler": "K_EULER",
    "prompt_strength": 0.8,
    "safety_checker": False,
    "enhance_prompt": True,
    "upscale": True,
    "upscale_factor": 4,
    "style_preset": "anime",
    "init_image": "https://example.com/start.png",
    "mask": "https://example.com/mask.png",
}
BAD_HEADERS = [
    ("X-Output-Format", "gif"),
    ("X-Replicate-Seed", "-1"),
    ("X-Replicate-Seed", "abc"),
    ("X-Replicate-Num-Inference-Steps", "0"),
    ("X-Replicate-Num-Inference-Steps", "501"),
    ("X-Replicate-Guidance-Scale", "0.5"),
    ("X-Replicate-Guidance-Scale", "21"),
    ("X-Replicate-Guidance-Scale", "nan"),
    ("X-Replicate-Negative-Prompt", ""),
    ("X-Replicate-Num-Outputs", "5"),
    ("X-Replicate-Num-Outputs", "1.5"),
    ("X-Replicate-Scheduler", "EULER"),
    ("X-Replicate-Prompt-Strength", "1.5"),
    ("X-Replicate-Safety-Checker", "maybe"),
    ("X-Replicate-Enhance-Prompt", "true"),
    ("X-Replicate-Upscale", "1"),
    ("X-Replicate-Upscale-Factor", "3"),
    ("X-Replicate-Style-Preset", ""),
    ("X-Replicate-Init-Image", "file:///etc/passwd"),
    ("X-Replicate-Mask", "not a url"),
]
PAINT_LINK = "/files/tools/cat.png?sign=s"


@pytest.fixture(scope="module")
def upstream(fake_openai_chat):
    return fake_openai_chat


@pytest.fixture
def dify(fake_dify):
    fake_dify.reset()
    fake_dify.serve_files = True
    painter = fake_dify.add_app("app-painter-key", "workflow", name="painter")
    painter.files = [{"type": "image", "url": PAINT_LINK, "mime_type": "image/png"}]
    fake_dify.add_app("app-chat-key", "chat", name="chatbot")
    return fake_dify


@pytest.fixture(scope="module")
def images_gateway(start_module_gateway, upstream, fake_dify, fake_ollama, tmp_path_factory):
    config = tmp_path_factory.mktemp("images") / "relay.toml"
    config.write_text(
        f"""
[backends.local]
type = "ollama"
url = "{fake_ollama.url}"
models = ["llama*"]

[backends.pictures]
type = "openai"
url = "{upstream.url}/v1"
key_env = "PICTURES_KEY"
models = ["img-*"]

[backends.dify]
type = "dify"
url = "{fake_dify.url}/v1"

[backends.dify.apps.painter]
key_env = "PAINTER_KEY"
mode = "workflow"
query_input = "prompt"
inputs = {{quality = "high"}}

[backends.dify.apps.chatbot]
key_env = "CHATBOT_KEY"
"""
    )
    env = {
        "RELAY_CONFIG": str(config),
        "RELAY_API_KEYS": API_KEY,
        "PICTURES_KEY": UPSTREAM_KEY,
        "PAINTER_KEY": "app-painter-key",
        "CHATBOT_KEY": "app-chat-key",
    }
    return start_module_gateway(env)


@pytest.fixture
def sdk(images_gateway, upstream, dify):
    upstream.reset()
    with openai.OpenAI(base_url=images_gateway.url + "/v1", api_key=API_KEY, max_retries=0) as c:
        yield c


def image_posts(upstream):
    return [r for r in upstream.requests if r.path == "/v1/images/generations"]


# --- an OpenAI-compatible image upstream --------------------------------------------------


def test_upstream_images_as_urls_with_every_setting_passed_on(sdk, upstream):
    result = sdk.images.generate(
        model="img-1", prompt="a cat", n=2, size="512x512", extra_headers=VALID_HEADERS
    )
    assert [d.url for d in result.data] == [
        f"{upstream.url}/files/image-0.png",
        f"{upstream.url}/files/image-1.png",
    ]
    assert result.data[0].revised_prompt == "A revised a cat"
    assert result.created > 0
    sent = image_posts(upstream)[-1]
    assert sent.body == {
        "model": "img-1",
        "prompt": "a cat",
        "n": 2,
        "response_format": "url",
        "size": "512x512",
        **VALID_OPTIONS,
    }
    assert sent.headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"


def test_upstream_images_as_base64(sdk, upstream):
    result = sdk.images.generate(
        model="img-1",
        prompt="a dog",
        response_format="b64_json",
        extra_headers={"X-Replicate-Num-Outputs": "3"},
        extra_body={"quality": "hd"},
    )
    assert [base64.b64decode(d.b64_json) for d in result.data] == [PNG] * 3
    sent = image_posts(upstream)[-1].body
    assert (sent["n"], sent["num_outputs"], sent["quality"]) == (3, 3, "hd")


def test_upstream_image_error_keeps_its_status(sdk, upstream):
    error = {"message": "Your prompt was rejected", "type": "invalid_request_error"}
    upstream.reply = Reply(status=400, error={**error, "code": "content_policy_violation"})
    with pytest.raises(openai.BadRequestError) as e:
        sdk.images.generate(model="img-1", prompt="something")
    assert e.value.code == "content_policy_violation" and "pictures" in e.value.message


# --- a Dify workflow app ------------------------------------------------------------------


def test_dify_workflow_images_as_absolute_urls_with_settings_as_inputs(sdk, dify):
    result = sdk.images.generate(
        model="painter", prompt="a red fox", size="1024x1024", extra_headers=VALID_HEADERS
    )
    assert [d.url for d in result.data] == [dify.url + PAINT_LINK]
    run = dify.last_run()
    assert run.mode == "workflow"
    assert run.inputs == {
        "quality": "high",
        **VALID_OPTIONS,
        "size": "1024x1024",
        "prompt": "a red fox",
    }


def test_dify_workflow_images_as_base64_are_downloaded(sdk, dify):
    result = sdk.images.generate(model="painter", prompt="a fox", response_format="b64_json")
    assert base64.b64decode(result.data[0].b64_json) == b"\x89PNG\r\n\x1a\ncat.png"


def test_dify_workflow_without_an_image_is_a_502(sdk, dify):
    dify.apps["app-painter-key"].files = []
    with pytest.raises(openai.InternalServerError) as e:
        sdk.images.generate(model="painter", prompt="a fox")
    assert e.value.status_code == 502 and "without an image" in e.value.message


def test_chat_apps_and_ollama_models_cannot_make_images(sdk, dify):
    with pytest.raises(openai.BadRequestError) as e:
        sdk.images.generate(model="chatbot", prompt="a fox")
    assert "only workflow apps make images" in e.value.message and e.value.param == "model"
    with pytest.raises(openai.BadRequestError) as e:
        sdk.images.generate(model="llama3.2", prompt="a fox")
    assert "does not generate images" in e.value.message


# --- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(("header", "value"), BAD_HEADERS)
def test_each_bad_header_is_a_400_naming_it(sdk, upstream, header, value):
    with pytest.raises(openai.BadRequestError) as e:
        sdk.images.generate(model="img-1", prompt="a cat", extra_headers={header: value})
    assert e.value.param == header and header in e.value.message
    assert not image_posts(upstream)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "img-1"}, "prompt"),
        ({"prompt": "a cat"}, "model"),
        ({"model": "img-1", "prompt": "a cat", "n": 0}, "n"),
        ({"model": "img-1", "prompt": "a cat", "size": "big"}, "size"),
        ({"model": "img-1", "prompt": "a cat", "response_format": "png"}, "response_format"),
    ],
)
def test_bad_bodies_are_400s_naming_the_field(images_gateway, body, param):
    resp = requests.post(
        images_gateway.url + "/v1/images/generations",
        json=body,
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=10,
    )
    assert resp.status_code == 400 and resp.json()["error"]["param"] == param


def test_num_outputs_header_and_n_must_agree(sdk):
    with pytest.raises(openai.BadRequestError) as e:
        sdk.images.generate(
            model="img-1", prompt="a cat", n=2, extra_headers={"X-Replicate-Num-Outputs": "3"}
        )
    assert e.value.param == "X-Replicate-Num-Outputs"


def test_docs_image_curl_examples_work(images_gateway, upstream, dify):
    readme = (ROOT / "docs" / "backends.md").read_text()
    blocks = [b for b in re.findall(r"```bash\n(.*?)```", readme, flags=re.S) if "/images/" in b]
    assert blocks
    env = {"RELAY": images_gateway.url, "KEY": API_KEY, "PATH": "/usr/bin:/bin"}
    for model in ("img-1", "painter"):
        for block in blocks:
            out = subprocess.run(
                ["bash", "-c", block],
                env={**env, "IMAGES_MODEL": model},
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert out.returncode == 0 and '"data"' in out.stdout, (block, out.stdout)
    assert image_posts(upstream)[-1].body["seed"] == 42


def test_docs_image_python_example_works(sdk, dify):
    readme = (ROOT / "docs" / "backends.md").read_text()
    [block] = [b for b in re.findall(r"```python\n(.*?)```", readme, flags=re.S) if ".images." in b]
    scope = {"client": sdk}
    exec(compile(block, "docs/backends.md", "exec"), scope)
    assert scope["png_bytes"] == b"\x89PNG\r\n\x1a\ncat.png"
    assert dify.last_run().inputs["num_inference_steps"] == 30
