#!/usr/bin/env python3
"""integration.chat_browser -- the chat page in a real headless browser (test_chat_browser.sh).

Two herald-chat processes on one bus (Redis by default: HD_REDIS_URL; HD_CHAT_TEST_BUS=rabbitmq
uses HD_AMQP_URL), Debian's chromium driven headless by chromedriver over the W3C WebDriver
protocol, spoken here with urllib (the Python standard library only: no Selenium, no PyPI).

  1. two browser sessions, one on each process, join the same room and wait for "connected";
  2. each posts a message; each page shows both (its own came back over the bus too);
  3. a message with markup shows as text: the <b> is in the line's text, and no <b> or
     <img> element was made from it;
  4. a screenshot of the first page goes to $HD_CHAT_SCREENSHOT (docs/chat.png when asked).

Exit 0 when everything held, 1 with the reason otherwise; the chat logs are printed on failure.
"""
import base64
import concurrent.futures
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the W3C key of an element reference


T0 = time.monotonic()


def step(what):
    print(f"# {time.monotonic() - T0:5.1f} s: {what}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, timeout=90):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"{method} {url}: {e.code} {e.read()[:500]!r}") from None


# Generous limits: they cost nothing when things go well, and a shared CI machine under load
# can take tens of seconds to start a browser (the test takes ~20 s on an idle one).
def wait_until(what, fn, timeout=60.0):
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        try:
            last = fn()
            if last:
                return last
        except (RuntimeError, OSError) as e:  # not there yet (an element, a port)
            last = e
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


class Browser:
    """One WebDriver session: a headless chromium with its own profile."""

    def __init__(self, driver, profile):
        caps = {"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": shutil.which("chromium") or "/usr/bin/chromium",
                # What a test needs and nothing more: a browser that starts fast on a
                # loaded machine (no extensions, no background traffic, no updates).
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=820,640",
                         "--no-first-run", "--no-default-browser-check",
                         "--disable-extensions", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync",
                         "--disable-default-apps", "--mute-audio",
                         f"--user-data-dir={profile}"]}}}}
        self.base = driver
        self.id = http("POST", f"{driver}/session", caps, timeout=180)["value"]["sessionId"]
        self.url = f"{driver}/session/{self.id}"

    def go(self, url):
        http("POST", f"{self.url}/url", {"url": url})

    def find(self, css):
        return http("POST", f"{self.url}/element",
                    {"using": "css selector", "value": css})["value"][ELEMENT]

    def type(self, css, text):
        http("POST", f"{self.url}/element/{self.find(css)}/value", {"text": text})

    def click(self, css):
        http("POST", f"{self.url}/element/{self.find(css)}/click", {})

    def text(self, css):
        return http("GET", f"{self.url}/element/{self.find(css)}/text")["value"]

    def js(self, script, *args):
        return http("POST", f"{self.url}/execute/sync",
                    {"script": script, "args": list(args)})["value"]

    def screenshot(self, path):
        png = base64.b64decode(http("GET", f"{self.url}/screenshot")["value"])
        with open(path, "wb") as f:
            f.write(png)

    def quit(self):
        try:
            http("DELETE", self.url, timeout=10)
        except Exception:
            pass


def reap_browsers(tmp):
    """Kill what is left of browsers started with a profile under tmp: a session that timed
    out while starting leaves its chromium behind when chromedriver goes. Only processes
    whose command line names this run's own directory are touched."""
    mark = f"--user-data-dir={tmp}/".encode()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if mark in f.read():
                    os.kill(int(pid), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            pass


def start_chat(binary, name, bus, tmp):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HD_")}
    env.update({"HD_CHAT_LISTEN": f"127.0.0.1:{port}", "HD_CHAT_INSTANCE": name,
                "HD_CHAT_BUS": bus, "HD_CHAT_ROOMS": "general,random"})
    for key in ("HD_REDIS_URL", "HD_AMQP_URL"):
        if os.environ.get(key):
            env[key] = os.environ[key]
    log = open(os.path.join(tmp, f"{name}.log"), "wb")
    p = subprocess.Popen([binary], env=env, stdout=log, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"

    def healthy():
        if p.poll() is not None:
            raise AssertionError(f"{name} exited ({p.returncode}) while starting")
        try:
            return http("GET", f"{base}/health", timeout=2)["status"] == "ok"
        except (OSError, RuntimeError):
            return False
    wait_until(f"{name} healthy", healthy, 20)
    return p, base, log.name


def join(browser, base, name):
    browser.go(base + "/")
    wait_until("the room list", lambda: browser.js(
        "return document.querySelectorAll('#room option').length") > 0)
    browser.type("#name", name)
    browser.click("#join")
    wait_until(f"{name} connected",
               lambda: browser.text("#status").startswith("connected to general"))


def say(browser, text):
    browser.type("#text", text)
    browser.click("#send")


def lines(browser):
    return browser.js("return Array.from(document.querySelectorAll('#messages li'))"
                      ".map(li => li.textContent)")


def main():
    src, build = sys.argv[1], sys.argv[2]
    bus = os.environ.get("HD_CHAT_TEST_BUS") or "redis"
    need = "HD_REDIS_URL" if bus == "redis" else "HD_AMQP_URL"
    if not os.environ.get(need):
        print(f"FAIL: {need} is not set (start scripts/servers.sh and source its env)")
        return 1
    for tool in ("chromium", "chromedriver"):
        if shutil.which(tool) is None:
            print(f"FAIL: {tool} not found (scripts/deps.sh installs chromium chromium-driver)")
            return 1
    tmp = tempfile.mkdtemp(prefix="herald-chat-browser-")
    procs, browsers, logs = [], [], []
    ok = False
    try:
        tag = f"{os.getpid()}"
        p1, base1, log1 = start_chat(os.path.join(build, "herald-chat"), f"b1-{tag}", bus, tmp)
        procs.append(p1)
        logs.append(log1)
        p2, base2, log2 = start_chat(os.path.join(build, "herald-chat"), f"b2-{tag}", bus, tmp)
        procs.append(p2)
        logs.append(log2)
        step("chat processes up")
        dport = free_port()
        driver = subprocess.Popen(["chromedriver", f"--port={dport}"],
                                  stdout=open(os.path.join(tmp, "chromedriver.log"), "wb"),
                                  stderr=subprocess.STDOUT)
        procs.append(driver)
        dbase = f"http://127.0.0.1:{dport}"
        wait_until("chromedriver", lambda: http("GET", f"{dbase}/status", timeout=2)
                   ["value"]["ready"], 20)
        # The two browsers start at once: starting one is most of this test's time.
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            made = [pool.submit(Browser, dbase, os.path.join(tmp, who))
                    for who in ("alice", "bob")]
            for f in made:
                try:
                    browsers.append(f.result())
                except Exception as e:  # the other one is still quit below
                    raise RuntimeError(f"cannot start a browser: {e}") from None
        alice, bob = browsers
        step("browsers up")

        with concurrent.futures.ThreadPoolExecutor(2) as pool:  # two users, at once
            for f in [pool.submit(join, alice, base1, "alice"),
                      pool.submit(join, bob, base2, "bob")]:
                f.result()
        step("joined")
        print("ok 1 - two sessions on two processes joined 'general'")

        hello_a = f"hello from alice {tag}"
        hello_b = f"hi alice, bob here {tag}"
        say(alice, hello_a)
        wait_until("bob sees alice", lambda: any(hello_a in t for t in lines(bob)))
        say(bob, hello_b)
        wait_until("alice sees bob", lambda: any(hello_b in t for t in lines(alice)))
        wait_until("alice sees her own", lambda: any(hello_a in t for t in lines(alice)))
        wait_until("bob sees his own", lambda: any(hello_b in t for t in lines(bob)))
        print("ok 2 - each page shows both messages, over the bus")

        markup = "<b>bold?</b> <img src=x onerror=\"document.title='owned'\">"
        say(alice, markup)
        wait_until("bob sees the markup", lambda: any(markup in t for t in lines(bob)))
        made = bob.js("return document.querySelectorAll('#messages b, #messages img').length")
        assert made == 0, f"{made} elements were made from a message"
        assert bob.js("return document.title") == "herald chat", "a message ran script"
        print("ok 3 - markup in a message is shown as text")

        say(bob, "à bientôt, ça marche ✓")
        wait_until("alice sees UTF-8", lambda: any("ça marche ✓" in t for t in lines(alice)))
        shot = os.environ.get("HD_CHAT_SCREENSHOT") or os.path.join(tmp, "chat.png")
        alice.screenshot(shot)
        with open(shot, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", "the screenshot is not a PNG"
        print(f"ok 4 - screenshot {shot}")
        ok = True
    except (AssertionError, RuntimeError, OSError) as e:
        print(f"FAIL: {e}")
    finally:
        for b in browsers:
            b.quit()
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        reap_browsers(tmp)
        # The chat processes must stop cleanly (exit 0) on SIGTERM even with streams open.
        for p, log in zip(procs[:2], logs):
            if p.returncode != 0:
                print(f"FAIL: {os.path.basename(log)} exited {p.returncode} after SIGTERM")
                ok = False
        if not ok:
            for log in logs:
                print(f"---- {log}")
                with open(log, errors="replace") as f:
                    print("".join(f.readlines()[-30:]))
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
