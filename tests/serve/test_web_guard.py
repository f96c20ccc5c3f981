"""web_demo.py with logins, as a real subprocess on 127.0.0.1, driven over real HTTP (requests,
gradio_client): failed logins are throttled per client, the login page and a wrong file type
speak Chinese, one login cannot read another's uploads or previews, nothing of an upload is left
after its time, and SIGTERM stops it like Ctrl-C (exit 0, uploads gone)."""

import http.client
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from remoteglm.compat import free_port

ROOT = Path(__file__).resolve().parents[2]
PNG = ROOT / "tests" / "fixtures" / "images" / "s2_farmland.png"
EXAMPLES = {p.name for p in (ROOT / "data" / "sample" / "images").iterdir()}
ANA, BO = ("ana", "pw-ana-1"), ("bo", "pw-bo-2")
TTL_MIN = 0.05  # 3 s
DIST_VARS = ("MASTER_PORT", "MASTER_ADDR", "RANK", "LOCAL_RANK", "WORLD_SIZE")


@pytest.fixture(scope="module", autouse=True)
def server(start_server, tiny_checkpoint, tmp_path_factory):
    """The demo with two logins and uploads kept 3 s; (process, base URL, its GRADIO_TEMP_DIR)."""
    root = tmp_path_factory.mktemp("web_guard")
    uploads = root / "gradio"
    logins = root / "logins"
    logins.write_text(f"{ANA[0]}:{ANA[1]}\n{BO[0]}:{BO[1]}\n")
    env = {k: v for k, v in os.environ.items() if k not in DIST_VARS}
    env.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", GRADIO_TEMP_DIR=str(uploads),
               GRADIO_ANALYTICS_ENABLED="False")
    port = free_port()
    srv = start_server([sys.executable, str(ROOT / "web_demo.py"), "--from_pretrained", str(tiny_checkpoint),
                        "--port", str(port), "--auth_file", str(logins), "--upload_ttl_minutes", str(TTL_MIN),
                        "--max_new_tokens", "4"], env=env, cwd=ROOT, ready_marker="Running on local URL")
    yield srv, f"http://127.0.0.1:{port}/", uploads
    srv.stop()


@pytest.fixture(scope="module")
def url(server):
    srv, url, _ = server
    srv.wait_ready("web demo with logins")
    return url


def login(url, user, password, source="127.0.0.1") -> tuple[requests.Response, requests.Session]:
    """POST /login from ``source`` (any 127.x address reaches the server: another client)."""
    s = requests.Session()
    s.mount("http://", SourceAdapter(source))
    return s.post(url + "login", data={"username": user, "password": password}, timeout=30), s


class SourceAdapter(requests.adapters.HTTPAdapter):
    def __init__(self, source):
        self.source = source
        super().__init__()

    def init_poolmanager(self, *a, **kw):
        kw["source_address"] = (self.source, 0)
        super().init_poolmanager(*a, **kw)


def session_of(url, who) -> requests.Session:
    r, s = login(url, *who)
    assert r.status_code == 200, r.text
    return s


def upload(s: requests.Session, url, path: Path) -> str:
    r = s.post(url + "gradio_api/upload", files={"files": (path.name, path.read_bytes(), "image/png")}, timeout=30)
    assert r.status_code == 200, r.text
    [stored] = r.json()
    return stored


@pytest.fixture
def own_png(tmp_path) -> Path:
    """A PNG no one else has (random pixels): not one of the examples."""
    from PIL import Image

    path = tmp_path / "own.png"
    Image.frombytes("RGB", (64, 64), os.urandom(64 * 64 * 3)).save(path)
    return path


def texts(messages):
    out = []
    for m in messages:
        c = m["content"]
        out.append("".join(p.get("text", "") for p in c) if isinstance(c, list) else c)
    return out


# ---- logins ---------------------------------------------------------------------------------------
def test_the_login_page_speaks_chinese(url):
    r = requests.get(url + "gradio_api/login_check", timeout=30)
    assert r.status_code == 401
    message = r.json()["detail"]["auth_message"]
    assert "请输入用户名和密码" in message and "稍后再试" in message, message


def test_failed_logins_are_throttled_per_client(url):
    source = "127.0.0.3"
    for _ in range(6):  # the first ones are checked (and wrong)
        r, _ = login(url, ANA[0], "wrong", source)
        assert r.status_code == 400 and r.json()["detail"] == "Incorrect credentials.", r.text
    r, _ = login(url, *ANA, source)  # right, but too soon: refused unchecked
    assert r.status_code == 400 and "登录失败次数过多" in r.json()["detail"], r.text
    wait = int(r.headers["Retry-After"])
    assert 1 <= wait <= 2
    refused = 0
    for _ in range(24):
        r, _ = login(url, ANA[0], "wrong", source)
        refused += "登录失败次数过多" in r.json()["detail"]
    assert refused >= 20  # 30 wrong passwords in a row are no longer all checked
    other, _ = login(url, *BO, "127.0.0.4")  # another client is not held back
    assert other.status_code == 200
    r, _ = login(url, *ANA, source)
    time.sleep(int(r.headers.get("Retry-After", "0")) + 0.2)
    r, _ = login(url, *ANA, source)  # the window has passed: a right password logs in
    assert r.status_code == 200 and r.json() == {"success": True}, r.text
    r, _ = login(url, ANA[0], "wrong", source)  # and the count started again
    assert r.json()["detail"] == "Incorrect credentials."


# ---- uploads ---------------------------------------------------------------------------------------
def test_a_wrong_file_type_gets_a_chinese_message(url, tmp_path):
    from gradio_client import Client, handle_file

    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    client = Client(url, auth=BO, verbose=False, download_files=False)
    preview, chat = client.predict(handle_file(str(notes)), api_name="/upload_image")
    [text] = texts(chat)
    assert preview is None and "不支持的文件类型 .txt，请上传 PNG、JPEG 或 TIFF 图像" in text, text


def test_one_login_cannot_read_another_logins_uploads(url, server, own_png):
    from gradio_client import Client, handle_file

    ana, bo = session_of(url, ANA), session_of(url, BO)
    stored = upload(ana, url, own_png)
    file_url = url + "gradio_api/file=" + stored
    assert ana.get(file_url, timeout=30).status_code == 200
    assert bo.get(file_url, timeout=30).status_code == 403
    assert requests.get(file_url, timeout=30).status_code == 401  # not logged in at all
    # nor have it processed by naming it as an event's input (the preview would show it)
    call = {"data": [{"path": stored, "meta": {"_type": "gradio.FileData"}}]}
    assert bo.post(url + "gradio_api/call/upload_image", json=call, timeout=30).status_code == 403
    r = ana.post(url + "gradio_api/call/upload_image", json=call, timeout=30)
    assert r.status_code == 200 and r.json()["event_id"], r.text
    # what the app hands back (the preview) belongs to the login that asked for it
    client = Client(url, auth=ANA, verbose=False, download_files=False)
    preview, _ = client.predict(handle_file(str(own_png)), api_name="/upload_image")
    assert preview["url"].startswith(url)
    assert requests.get(preview["url"], cookies=client.cookies, timeout=30).status_code == 200
    assert bo.get(preview["url"], timeout=30).status_code == 403
    assert ana.get(preview["url"], timeout=30).status_code == 403  # another login of the same user, too
    # the examples' copies stay public to every login
    example = next(p for p in server[2].rglob("*") if p.name in EXAMPLES)
    assert bo.get(url + "gradio_api/file=" + str(example), timeout=30).status_code == 200


def test_nothing_of_an_upload_is_left_after_its_time(url, server, own_png):
    from gradio_client import Client, handle_file

    _, _, uploads = server
    client = Client(url, auth=BO, verbose=False, download_files=False)
    for _ in range(2):
        client.predict(handle_file(str(own_png)), api_name="/upload_image")
    assert [p for p in uploads.rglob("*") if p.is_file() and p.name == own_png.name]
    examples = [p for p in uploads.rglob("*") if p.is_file() and p.name in EXAMPLES]
    assert len(examples) == len(EXAMPLES)

    def leftovers():
        files = [p for p in uploads.rglob("*") if p.is_file() and p.name not in EXAMPLES]
        empty = [p for p in uploads.rglob("*") if p.is_dir() and not any(p.iterdir()) and p.parent != uploads.parent]
        return files + empty

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and leftovers():
        time.sleep(0.5)
    assert not leftovers(), leftovers()
    assert all(p.is_file() for p in examples)  # the example copies stay: clicking an example still works


# ---- stopping (last: it ends the module's server) ----------------------------------------------------------------
def test_sigterm_stops_it_like_ctrl_c_and_removes_the_uploads(url, server, own_png):
    srv, _, uploads = server
    stored = Path(upload(session_of(url, ANA), url, own_png))
    assert stored.is_file() and uploads in stored.parents
    t = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    try:
        rc = srv.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("SIGTERM did not stop the demo:\n" + "".join(srv.lines[-20:]))
    assert rc == 0 and time.monotonic() - t < 15, "".join(srv.lines[-20:])
    assert not [p for p in uploads.rglob("*") if p.is_file()], list(uploads.rglob("*"))
    out = "".join(srv.lines)
    assert "Traceback" not in out, out[-2000:]
    with pytest.raises(OSError):
        http.client.HTTPConnection("127.0.0.1", int(url.rsplit(":", 1)[1].strip("/")), timeout=2).request("GET", "/")
