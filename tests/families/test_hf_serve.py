"""Every transformers family's run served through the same front ends as VisualGLM: the engine
(streaming prefixes, batch = one by one, cancel), cli_demo.py, the OpenAI-compatible API driven
by the openai client, web_demo.py driven by gradio_client and headless Chromium, and the
evaluation with VisualGLM and a tuned transformers-family run side by side."""

import base64
import json
import os
import sys

import openai
import pytest

from remoteglm.compat import free_port
from remoteglm.serve.engine import strip_control
from remoteglm.serve.sampling import CHAT_DEFAULTS
from tests.serve.conftest import ServerProcess
from tests.families.conftest import HF_FAMILIES, ROOT, SAMPLE, env, train_images

IMG = SAMPLE / "images" / "s2_inlet.png"
Q, Q2 = "描述这张图片。", "有几条道路？"
CAP = 24


@pytest.fixture(scope="module")
def engines(hf_runs, servers):  # the servers start first and load while the engines are built here
    from remoteglm.serve.loading import load_engine

    return {f: load_engine(r, defaults=CHAT_DEFAULTS, max_new_tokens=CAP)[0] for f, r in hf_runs.items()}


@pytest.mark.parametrize("family", HF_FAMILIES)
def test_stream_grows_by_prefixes_and_batch_equals_one_by_one(engines, family):
    e = engines[family]
    texts, last = [], None
    for r in e.stream(str(IMG), Q, do_sample=False):
        texts.append(r.text)
        last = r
    assert last.finish_reason in ("stop", "length") and last.text == e.reply(str(IMG), Q, do_sample=False).text
    assert len(texts) > 2 and all(b.startswith(a) for a, b in zip(texts, texts[1:]))
    assert last.prompt_tokens > 16 and last.completion_tokens >= 1
    images = [str(p) for p in train_images()] + [None]
    queries = [Q] * (len(images) - 1) + ["你好"]
    hist = [None] * (len(images) - 2) + [[(Q, "一条河。")], None]
    one = [e.reply(im, q, h, do_sample=False).text for im, q, h in zip(images, queries, hist)]
    assert e.batch(images, queries, hist, batch_size=3) == one  # left-padded batches, mixed with and without images


@pytest.mark.parametrize("family", HF_FAMILIES)
def test_rows_generated_together_equal_one_by_one(engines, family):
    """The API's batches (``stream_rows``): rows with and without an image, each with its own
    max_new_tokens, stream their one-by-one answers; a row cancelled after its first words ends
    without a final reply and the others are unchanged."""
    from remoteglm.serve.engine import Row

    e = engines[family]
    images = [str(p) for p in train_images()[:3]] + [None, str(IMG)]
    queries, caps = [Q, Q2, Q, "你好", Q], [4, CAP, 12, CAP, CAP]
    one = [e.reply(im, q, do_sample=False, max_new_tokens=c) for im, q, c in zip(images, queries, caps)]
    gone = []
    rows = [Row(im, q, [], e.config(do_sample=False, max_new_tokens=c)) for im, q, c in zip(images, queries, caps)]
    rows[4].cancelled = lambda: bool(gone)
    got: dict[int, list] = {i: [] for i in range(len(rows))}
    for i, r in e.stream_rows(rows):
        got[i].append(r)
        if i == 4:
            gone.append(r)
    assert [got[i][-1] for i in range(4)] == one[:4]
    assert all(b.text.startswith(a.text) for i in range(4) for a, b in zip(got[i], got[i][1:]))
    assert len(got[4]) == 1 and got[4][0].finish_reason is None and one[4].text.startswith(got[4][0].text)


def test_abandoned_stream_stops_generation(engines):
    e = engines["qwen2_5_vl"]
    # sampling at a high temperature: hundreds of tokens unless stopped
    it = e.stream(str(IMG), Q, max_new_tokens=400, repetition_penalty=1.0, do_sample=True, temperature=5.0)
    next(it)
    it.close()
    assert e.lock.acquire(timeout=10), "the generation kept the engine busy after its reader left"
    e.lock.release()
    assert e.reply(str(IMG), Q, do_sample=False).finish_reason  # still serves


def test_context_and_images(engines):
    e = engines["glm4v"]
    assert e.context_length == 1024
    n_img, n_txt = e.prompt_tokens(Q, image=True), e.prompt_tokens(Q)
    assert n_img - n_txt >= 16 and e.config().max_length == 1024  # the model's context, not VisualGLM's 2048
    for im in (IMG, SAMPLE / "images" / "OSBS_029.tif"):  # the API's count is the prompt the model gets
        assert e.prompt_tokens(Q, [(Q, "农田。")], image=str(im)) == e.reply(str(im), Q, [(Q, "农田。")],
                                                                            max_new_tokens=1).prompt_tokens
    from remoteglm.errors import RemoteGLMError

    with pytest.raises(RemoteGLMError):
        e.check_image(b"not an image")


def test_cli_one_shot(hf_runs, engines, capsys, monkeypatch):
    from remoteglm.serve.cli import main  # cli_demo.py's main, in-process (no terminal: one-shot)

    monkeypatch.setattr(sys, "stdin", open(os.devnull))
    for family in HF_FAMILIES:
        assert main(["--from_pretrained", str(hf_runs[family]), "--image", str(IMG), "--prompt", Q, "--greedy",
                     "--max_new_tokens", str(CAP)]) == 0
        assert capsys.readouterr().out.strip() == engines[family].reply(str(IMG), Q, do_sample=False).text
    assert main(["--from_pretrained", str(hf_runs["qwen2_5_vl"]), "--tokenizer", "x.model", "--image", str(IMG),
                 "--prompt", Q]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: --tokenizer is for VisualGLM")


@pytest.fixture(scope="module")
def servers(hf_runs, tmp_path_factory):
    """The API (GLM-4.1V run) and the web demo (Qwen2.5-VL run), both started before they are needed."""
    api_port, web_port = free_port(), free_port()
    api = ServerProcess([sys.executable, "-m", "remoteglm.serve.api", "--from_pretrained", str(hf_runs["glm4v"]),
                         "--port", str(api_port), "--api_key", "sk-test", "--max_new_tokens", str(CAP)],
                        env=env(), cwd=ROOT, ready_marker="serving ")
    e = dict(env(), GRADIO_TEMP_DIR=str(tmp_path_factory.mktemp("gradio")), GRADIO_ANALYTICS_ENABLED="False")
    web = ServerProcess([sys.executable, str(ROOT / "web_demo.py"), "--from_pretrained", str(hf_runs["qwen2_5_vl"]),
                         "--port", str(web_port), "--max_new_tokens", str(CAP)], env=e, cwd=ROOT,
                        ready_marker="Running on local URL")
    yield {"api": (api, api_port), "web": (web, web_port)}
    api.stop()
    web.stop()


@pytest.fixture(scope="module")
def api(servers):
    srv, port = servers["api"]
    srv.wait_ready("API server")
    return openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-test", max_retries=0, timeout=60), srv


def test_api_with_the_openai_client(api, engines, hf_runs):
    client, srv = api
    name = hf_runs["glm4v"].name
    assert [m.id for m in client.models.list().data] == [name]
    url = "data:image/png;base64," + base64.b64encode(IMG.read_bytes()).decode()
    msgs = [{"role": "user", "content": [{"type": "text", "text": Q}, {"type": "image_url", "image_url": {"url": url}}]}]
    r = client.chat.completions.create(model=name, messages=msgs, temperature=0)
    want = strip_control(engines["glm4v"].reply(str(IMG), Q, do_sample=False).text)
    assert r.choices[0].message.content == want and r.usage.prompt_tokens > 16
    parts = [c.choices[0].delta.content or "" for c in
             client.chat.completions.create(model=name, messages=msgs, temperature=0, stream=True) if c.choices]
    assert "".join(parts) == want and len([p for p in parts if p]) > 1
    follow = msgs + [{"role": "assistant", "content": want}, {"role": "user", "content": Q2}]
    r2 = client.chat.completions.create(model=name, messages=follow, temperature=0)
    assert r2.choices[0].message.content == strip_control(
        engines["glm4v"].reply(str(IMG), Q2, [(Q, want)], do_sample=False).text)
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=name, messages=msgs, max_tokens=5000)
    assert err.value.code == "context_length_exceeded"
    import io

    from PIL import Image

    strip = io.BytesIO()
    Image.new("RGB", (4020, 20), (10, 200, 30)).save(strip, "PNG")  # decodes fine; the model's resize refuses it
    bad = [{"role": "user", "content": [{"type": "text", "text": Q}, {"type": "image_url", "image_url": {
        "url": "data:image/png;base64," + base64.b64encode(strip.getvalue()).decode()}}]}]
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=name, messages=bad)
    assert "too long and thin" in err.value.message
    assert client.chat.completions.create(model=name, messages=msgs, temperature=0).choices[0].message.content == want


def test_serving_an_adapter_prints_no_library_warnings(api):
    """The terminal of a server on a LoRA run shows the server's own lines, not a library's
    deprecation notice (peft reads transformers' deprecated ``is_gradient_checkpointing`` while
    it loads the adapter)."""
    _, srv = api
    assert not [line for line in srv.lines if "Warning" in line], "".join(srv.lines)


def test_api_answers_concurrent_requests_like_one_by_one(api, engines, hf_runs):
    """Requests sent at once (answered in batches) get the one-by-one greedy answers, each its own."""
    import threading

    client, _ = api
    name = hf_runs["glm4v"].name
    asks = [(str(p), q) for p, q in zip(train_images()[:3], (Q, Q2, Q))] + [(None, "你好")]
    want = [strip_control(engines["glm4v"].reply(im, q, do_sample=False).text) for im, q in asks]
    got: dict[int, str] = {}

    def run(i, image, q):
        content = [{"type": "text", "text": q}]
        if image:
            url = "data:image/png;base64," + base64.b64encode(open(image, "rb").read()).decode()
            content.append({"type": "image_url", "image_url": {"url": url}})
        r = client.chat.completions.create(model=name, messages=[{"role": "user", "content": content}], temperature=0)
        got[i] = r.choices[0].message.content

    threads = [threading.Thread(target=run, args=(i, *a)) for i, a in enumerate(asks)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert [got.get(i) for i in range(len(asks))] == want


@pytest.fixture(scope="module")
def web(servers):
    srv, port = servers["web"]
    srv.wait_ready("web demo")
    return f"http://127.0.0.1:{port}/"


def test_web_demo_with_gradio_client_and_a_browser(web, engines, tmp_path):
    from gradio_client import Client, handle_file
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.browser import headless_chrome

    c = Client(web, verbose=False)
    c.predict(handle_file(str(IMG)), api_name="/upload_image")
    messages, _ = c.predict(Q, [], 0, 0.4, 100, 1024, CAP, api_name="/ask")
    want = engines["qwen2_5_vl"].reply(str(IMG), Q, do_sample=False).text
    got = messages[-1]["content"]
    got = "".join(p.get("text", "") for p in got) if isinstance(got, list) else got
    assert got == want
    driver = headless_chrome(tmp_path, window_size="1400,1000", headless="--headless=new")
    try:
        driver.get(web)
        info = WebDriverWait(driver, 60).until(lambda d: d.find_element(By.CSS_SELECTOR, "#model-info")).text
        assert "finetune-qwen2.5-vl" in info and "float32" in info
        assert driver.title == "Qwen2.5-VL Web Demo"  # the page names the family it serves, not VisualGLM
    finally:
        driver.quit()


def test_evaluation_side_by_side_with_visualglm(tiny_checkpoint, hf_runs, tmp_path):
    from remoteglm.eval.evaluate import main  # python -m remoteglm.eval, in-process

    out = tmp_path / "report"
    assert main(["--compare", str(tiny_checkpoint), str(hf_runs["qwen2_5_vl"]), "--labels", "visualglm", "qwen",
                 "--data", str(SAMPLE / "dataset_sample_zh.json"), "--split", "test", "--out", str(out),
                 "--max_new_tokens", "16", "--batch_size", "2"]) == 0
    m = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert [r["label"] for r in m["models"]] == ["visualglm", "qwen"]
    assert all("CIDEr-D" in r["caption"]["char"] for r in m["models"])
    assert all(set(im["answers"]) == {"visualglm", "qwen"} for im in m["images"])
    html = (out / "report.html").read_text(encoding="utf-8")
    assert all(name in html for name in ("visualglm", "qwen"))
    glm = tmp_path / "glm"  # the other family alone, in-process
    assert main(["--from_pretrained", str(hf_runs["glm4v"]), "--data", str(SAMPLE / "dataset_sample_zh.json"),
                 "--split", "test", "--out", str(glm), "--max_new_tokens", "16"]) == 0
    g = json.loads((glm / "metrics.json").read_text(encoding="utf-8"))
    assert g["models"][0]["label"] == hf_runs["glm4v"].name and "CIDEr-D" in g["models"][0]["caption"]["char"]


def test_sampling_defaults_come_from_the_model_folder(hf_bases, tmp_path, monkeypatch):
    """The authors' generation_config.json (Qwen2.5-VL-7B-Instruct's published values) is what an
    answer starts from, in every front end; a user's own setting overrides it."""
    import shutil

    from remoteglm.serve.chat import ChatSession
    from remoteglm.serve.cli import build_parser
    from remoteglm.serve.sampling import DEMO_DEFAULTS
    from remoteglm.serve.loading import load_engine

    d = tmp_path / "qwen"
    shutil.copytree(hf_bases["qwen2_5_vl"], d)
    published = {"do_sample": True, "repetition_penalty": 1.05, "temperature": 0.1, "top_p": 0.001, "top_k": 1}
    gc = json.loads((d / "generation_config.json").read_text())
    (d / "generation_config.json").write_text(json.dumps({**gc, **published}))
    for table in (CHAT_DEFAULTS, DEMO_DEFAULTS):
        cfg = load_engine(d, defaults=table)[0].config()
        assert {k: getattr(cfg, k) for k in published} == published
    engine = load_engine(d, defaults=DEMO_DEFAULTS)[0]
    args = build_parser().parse_args(["--from_pretrained", str(d)])  # no sampling flags given: the model's values
    gen = {k: getattr(args, k) for k in ("temperature", "top_p", "top_k", "repetition_penalty", "max_length")}
    cfg = engine.config(**ChatSession(engine, **gen).gen)
    assert (cfg.temperature, cfg.top_k, cfg.max_length) == (0.1, 1, engine.context_length)
    args = build_parser().parse_args(["--from_pretrained", str(d), "--temperature", "0.7", "--top_k", "5"])
    cfg = engine.config(temperature=args.temperature, top_k=args.top_k)
    assert (cfg.temperature, cfg.top_k, cfg.repetition_penalty) == (0.7, 5, 1.05)


def test_api_system_message_goes_to_the_templates_system_role(api, hf_runs):
    """The prompt the API counts (and the model gets) is what the folder's own template renders
    for the request, through transformers' apply_chat_template: the system text in its role, not
    glued onto the question (VisualGLM's rule, which has no system role)."""
    from transformers import AutoTokenizer

    client, _ = api
    run = hf_runs["glm4v"]
    sys_text = "你是遥感影像专家，回答要简短。"
    msgs = [{"role": "system", "content": sys_text}, {"role": "user", "content": Q}]
    r = client.chat.completions.create(model=run.name, messages=msgs, temperature=0, max_tokens=2)
    tok = AutoTokenizer.from_pretrained(run, local_files_only=True)
    template = (run / "chat_template.jinja").read_text(encoding="utf-8")
    want = tok.apply_chat_template(msgs, chat_template=template, add_generation_prompt=True, tokenize=True)
    want = want["input_ids"] if hasattr(want, "keys") else want  # a BatchEncoding in transformers 5
    assert r.usage.prompt_tokens == len(want)


@pytest.mark.parametrize("family", HF_FAMILIES)
def test_the_engine_reads_boxes_with_its_familys_codec_at_the_served_resolution(engines, hf_runs, family):
    """The codec the engine got from its family at load: answers' boxes come back in the image's pixels."""
    from remoteglm.boxes import Box
    from remoteglm.registry import family_named

    e = engines[family]
    lo, hi = e.processor.pixel_range()
    codec = family_named(family).box_codec(hf_runs[family], min_pixels=lo, max_pixels=hi)
    assert e.box_codec is not None and e.box_codec.settings == codec.settings
    loaded = e.load_image(str(IMG))
    truth = Box(20, 30, 200, 180, "道路")
    sx, sy = loaded.size[0] / loaded.original[0], loaded.size[1] / loaded.original[1]
    said = codec.encode([Box(truth.x1 * sx, truth.y1 * sy, truth.x2 * sx, truth.y2 * sy, "道路")], loaded.size)
    (box,), failures = e.boxes(f"图中的{said}。", loaded)
    fw, fh = codec.frame(*loaded.size)
    tol = max(loaded.original[0] / fw, loaded.original[1] / fh)
    assert failures == 0 and all(abs(a - b) <= tol for a, b in zip(box.xyxy, truth.xyxy)), (box, truth)
