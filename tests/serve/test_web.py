"""web_demo.py as a real subprocess on a free 127.0.0.1 port with the tiny checkpoint: driven by
gradio_client (upload + question -> streamed answer with history, clear, a corrupt upload, files
it must not serve) and end to end in headless Chromium through Selenium."""

import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from remoteglm.compat import free_port
from remoteglm.serve.sampling import DEMO_DEFAULTS
from remoteglm.serve.visualglm_engine import VisualGLMEngine
from tests.browser import headless_chrome

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "tests" / "fixtures" / "images"
PNG, TIF = IMAGES / "s2_farmland.png", IMAGES / "OSBS_029.tif"
CAP = 16
Q1, Q2 = "描述这张图片。", "有几条道路？"
DIST_VARS = ("MASTER_PORT", "MASTER_ADDR", "RANK", "LOCAL_RANK", "WORLD_SIZE")


@pytest.fixture(scope="module", autouse=True)
def server(start_server, tiny_checkpoint, tmp_path_factory):
    """Start web_demo.py before the module's first test; `url` waits for it."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in DIST_VARS}  # this process's rendezvous port is taken
    env.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1",
               GRADIO_TEMP_DIR=str(tmp_path_factory.mktemp("gradio")), GRADIO_ANALYTICS_ENABLED="False")
    srv = start_server([sys.executable, str(ROOT / "web_demo.py"), "--from_pretrained", str(tiny_checkpoint),
                        "--port", str(port), "--max_new_tokens", str(CAP), "--max_upload_mb", "5"],
                       env=env, cwd=ROOT, ready_marker="Running on local URL")
    yield srv, port
    srv.stop()


@pytest.fixture(scope="module")
def url(server):
    srv, port = server
    srv.wait_ready("web demo")
    lines = srv.lines
    assert f"http://127.0.0.1:{port}" in "".join(lines)  # loopback by default
    return f"http://127.0.0.1:{port}/"


@pytest.fixture(scope="module")
def expected(tiny):
    """The demo's answers, computed in-process with the same settings (greedy: temperature 0)."""
    model, tok, _ = tiny
    engine = VisualGLMEngine(model, tok, defaults=DEMO_DEFAULTS)
    gen = dict(temperature=0, top_p=0.4, top_k=100, max_length=2048, max_new_tokens=CAP)
    first = engine.reply(str(PNG), Q1, **gen).text
    second = engine.reply(str(PNG), Q2, [(Q1, first)], **gen).text
    text_only = engine.reply(None, Q1, **gen).text
    tif = engine.reply(str(TIF), Q1, **gen).text
    return first, second, text_only, tif


def texts(messages):
    """(role, text) pairs of gradio 6 chatbot messages (content is a list of parts)."""
    out = []
    for m in messages:
        c = m["content"]
        out.append((m["role"], "".join(p.get("text", "") for p in c) if isinstance(c, list) else c))
    return out


@pytest.fixture(scope="module")
def client(url):
    from gradio_client import Client

    return Client(url, verbose=False)


def test_upload_ask_follow_up_and_clear(client, expected):
    from gradio_client import handle_file

    first, second, _, _ = expected
    preview, chat = client.predict(handle_file(str(PNG)), api_name="/upload_image")
    assert preview and Path(preview).is_file() and chat == []
    job = client.submit(Q1, [], 0, 0.4, 100, 2048, CAP, api_name="/ask")
    messages, box = job.result(timeout=60)
    assert texts(messages) == [("user", Q1), ("assistant", first)] and box == ""
    partial = [texts(o[0])[-1][1] for o in job.outputs() if o[0]]
    assert len(set(partial)) > 2, "the answer did not stream"
    messages, _ = client.predict(Q2, messages, 0, 0.4, 100, 2048, CAP, api_name="/ask")
    assert texts(messages)[2:] == [("user", Q2), ("assistant", second)]  # the history was used
    assert client.predict(api_name="/clear") == []
    messages, _ = client.predict(Q1, [], 0, 0.4, 100, 2048, CAP, api_name="/ask")
    assert texts(messages) == [("user", Q1), ("assistant", first)]  # history cleared, image kept


def test_corrupt_and_oversized_uploads_get_a_chat_message(client, expected, tmp_path):
    from gradio_client import handle_file

    bad = tmp_path / "broken.png"
    bad.write_bytes(PNG.read_bytes()[:300])
    preview, chat = client.predict(handle_file(str(bad)), api_name="/upload_image")
    [(role, text)] = texts(chat)
    assert preview is None and role == "assistant"
    assert text.startswith("⚠️ 无法使用这张图像 / Cannot use this image: cannot read image broken.png")
    # the server is alive and, without an image, answers text-only
    messages, _ = client.predict(Q1, [], 0, 0.4, 100, 2048, CAP, api_name="/ask")
    assert texts(messages)[-1] == ("assistant", expected[2])
    fake = tmp_path / "notes.tif"
    fake.write_bytes(b"just text, not a TIFF")
    [(_, text)] = texts(client.predict(handle_file(str(fake)), api_name="/upload_image")[1])
    assert "cannot read image notes.tif" in text


def test_bomb_and_near_bomb_uploads_are_refused_before_decoding(client, server, tmp_path):
    from gradio_client import handle_file

    from tests.imagetest import png_bomb

    srv, _ = server
    rss = lambda: int(next(ln for ln in Path(f"/proc/{srv.proc.pid}/status").read_text().splitlines()  # noqa: E731
                           if ln.startswith("VmRSS")).split()[1])
    before = rss()
    for w, h in ((20000, 20000), (13000, 13000)):
        bomb = tmp_path / f"bomb{w}.png"
        bomb.write_bytes(png_bomb(w, h))
        preview, chat = client.predict(handle_file(str(bomb)), api_name="/upload_image")
        [(role, text)] = texts(chat)
        assert preview is None and role == "assistant" and "图片太大 / image too large" in text, text
    assert rss() - before < 200_000  # KiB: a decoded 13000x13000 image alone is 500 MB as RGB


def test_serves_no_file_outside_its_assets_uploads_and_examples(url):
    def status(path):
        try:
            return urllib.request.urlopen(f"{url}gradio_api/file={path}", timeout=10).status
        except urllib.error.HTTPError as e:
            return e.code

    assert status("/etc/passwd") == 403
    assert status(ROOT / "README.md") == 403
    assert status(ROOT / "remoteglm" / "serve" / "web.py") == 403
    assert status(ROOT / "data" / "sample" / "images" / "s2_farmland.png") == 200  # the examples folder


def test_public_binding_warns_and_bad_auth_is_one_line(capsys, tmp_path):
    from remoteglm.serve.web import main

    assert main(["--from_pretrained", str(tmp_path / "none"), "--host", "0.0.0.0", "--share"]) == 2
    err = capsys.readouterr().err
    assert "warning: --share publishes this demo on a public gradio.live URL" in err
    assert "warning: --host 0.0.0.0 makes the demo reachable from other machines" in err
    assert err.strip().splitlines()[-1].startswith("error: checkpoint not found")
    assert main(["--from_pretrained", str(tmp_path), "--auth", "nopassword"]) == 2
    assert capsys.readouterr().err.strip() == "error: --auth must look like user:password"


def test_browser_end_to_end(url, expected, tmp_path_factory):
    """Real headless Chromium: upload a TIFF, ask, wait for the streamed answer, screenshot."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    out = tmp_path_factory.mktemp("screenshots")
    driver = headless_chrome(out, window_size="1400,1000", headless="--headless=new")
    try:
        driver.get(url)
        wait = WebDriverWait(driver, 60)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#upload input[type=file]"))
        page = driver.find_element(By.CSS_SELECTOR, "#model-info").text
        assert "遥感图像对话" in driver.page_source and "量化 / Quantisation: float32" in page
        assert "内存 / Memory: weights " in page and " on cpu" in page
        driver.find_element(By.CSS_SELECTOR, "#upload input[type=file]").send_keys(str(TIF))
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#preview img"))
        # greedy, so the answer can be compared: temperature 0 in the settings panel
        driver.find_element(By.XPATH, "//button[contains(., 'Generation settings')]").click()
        temp = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "input[type=number][aria-label*='Temperature']"))
        temp.send_keys(Keys.CONTROL, "a")
        temp.send_keys("0", Keys.TAB)
        box = driver.find_element(By.CSS_SELECTOR, "#question textarea")
        box.send_keys(Q1)
        driver.find_element(By.CSS_SELECTOR, "#send").click()
        want = "".join(expected[3].split())

        def answer(d):
            bots = d.find_elements(By.CSS_SELECTOR, "#answer-box .message.bot")
            return "".join(bots[-1].text.split()) if bots else ""

        seen = set()

        def done(d):
            seen.add(answer(d))
            return answer(d) == want

        try:
            wait.until(done)
        finally:
            driver.save_screenshot(str(out / "web_demo.png"))
        assert (out / "web_demo.png").stat().st_size > 10_000
        assert Q1 in driver.find_element(By.CSS_SELECTOR, "#answer-box").text
        # a bundled example (served from the allowed examples folder) replaces the image and starts a new chat
        shown = driver.find_element(By.CSS_SELECTOR, "#preview img").get_attribute("src")
        driver.find_element(By.XPATH, "//button[contains(., 's2_town')]").click()
        wait.until(lambda d: [i for i in d.find_elements(By.CSS_SELECTOR, "#preview img") if i.get_attribute("src") != shown])
        wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, "#answer-box .message"))
    finally:
        driver.quit()


def test_web_listens_only_where_asked(server, url):
    from tests.serve.conftest import listening_addresses

    srv, port = server
    addrs = listening_addresses(srv.proc.pid)
    assert ("127.0.0.1", port) in addrs and all(host == "127.0.0.1" for host, _ in addrs), addrs


def test_quiet_start_without_quant(server, url):
    """No --quant: bitsandbytes is never imported (its native library is not mapped into the
    server) and its "Failed to load CPU gemm_4bit_forward from kernels-community" line is not printed."""
    srv, _ = server
    assert "bitsandbytes" not in Path(f"/proc/{srv.proc.pid}/maps").read_text()
    out = "".join(srv.lines)
    assert "kernels-community" not in out and "gemm_4bit" not in out


def test_login_from_the_environment_and_uploads_deleted(start_server, tiny_checkpoint, tmp_path):
    """--auth on the command line shows in `ps`: the login can come from $REMOTEGLM_WEB_AUTH (or a
    file). Uploaded images are deleted after --upload_ttl_minutes, not kept forever."""
    import time

    from gradio_client import Client, handle_file
    from PIL import Image

    port = free_port()
    uploads = tmp_path / "gradio"
    env = {k: v for k, v in os.environ.items() if k not in DIST_VARS}
    env.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", GRADIO_TEMP_DIR=str(uploads),
               GRADIO_ANALYTICS_ENABLED="False", REMOTEGLM_WEB_AUTH="ana:s3cret-pw")
    srv = start_server([sys.executable, str(ROOT / "web_demo.py"), "--from_pretrained", str(tiny_checkpoint),
                        "--port", str(port), "--upload_ttl_minutes", "0.05"], env=env, cwd=ROOT,
                       ready_marker="Running on local URL")
    try:
        srv.wait_ready("web demo with login")
        assert "s3cret-pw" not in Path(f"/proc/{srv.proc.pid}/cmdline").read_bytes().decode()
        with pytest.raises(Exception):
            Client(f"http://127.0.0.1:{port}/", verbose=False).predict(handle_file(str(PNG)), api_name="/upload_image")
        client = Client(f"http://127.0.0.1:{port}/", auth=("ana", "s3cret-pw"), verbose=False)
        own = tmp_path / "own.png"  # not an example: their copies are kept
        Image.frombytes("RGB", (64, 64), os.urandom(64 * 64 * 3)).save(own)
        preview, _ = client.predict(handle_file(str(own)), api_name="/upload_image")
        stored = [p for p in uploads.rglob("*") if p.is_file() and p.name == own.name]
        assert stored, "the upload was not stored where GRADIO_TEMP_DIR says"
        deadline = time.time() + 30
        while time.time() < deadline and any(p.exists() for p in stored):
            time.sleep(0.5)
        assert not any(p.exists() for p in stored), "uploads were not deleted after their time"
    finally:
        srv.stop()


def test_auth_file_and_bad_logins(tmp_path):
    from remoteglm.errors import RemoteGLMError
    from remoteglm.serve.web import read_auth

    f = tmp_path / "logins"
    f.write_text("# team\nana:pw1\n\nbo:pw:2\n")
    assert read_auth(None, str(f)) == [("ana", "pw1"), ("bo", "pw:2")]
    assert read_auth("x:y", str(f)) == [("x", "y")]  # the flag wins
    f.write_text("nocolon\n")
    with pytest.raises(RemoteGLMError, match="line 1 must look like user:password"):
        read_auth(None, str(f))
    with pytest.raises(RemoteGLMError, match="--auth_file"):
        read_auth(None, str(tmp_path / "missing"))
