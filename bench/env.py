"""The benchmark's surroundings: the machine, package versions, a clean environment, the HTTP emulator process."""

from __future__ import annotations

import os
import platform
import re
import signal
import subprocess
import sys
from importlib import metadata
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(__file__).resolve().parent

#: Variables that would point a child (or this process's HTTP client) at a real account, a proxy or a real host.
_STRIPPED_PREFIXES = ("ALIBABA_CLOUD_", "ALIBABACLOUD_", "ALICLOUD_", "SMS_MCP_", "STANDIN_")
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


def as_served() -> None:
    """The in-process measures of ``SmsService`` run in this process as ``sms-mcp serve`` runs it: with what was
    built before serving frozen out of the cyclic collector (``sms_mcp.cli.settle_startup_objects``)."""
    from sms_mcp.cli import settle_startup_objects

    settle_startup_objects()


def isolate_this_process(pycache: Path | None = None) -> None:
    """Only 127.0.0.1 may be reached: no proxy, no credentials from the caller, no ECS metadata lookups.

    With ``pycache``, every child process keeps its bytecode there (``PYTHONPYCACHEPREFIX``) and may write it,
    even when the caller set ``PYTHONDONTWRITEBYTECODE``: otherwise a module edited since its ``.pyc`` was
    written is compiled again at every start, and the start-up figures measure the compiler. An installed
    package has its bytecode compiled at install time; the warm-up starts fill this cache."""
    for name in list(os.environ):
        if name.startswith(_STRIPPED_PREFIXES) or name in PROXY_VARS:
            del os.environ[name]
    os.environ["ALIBABA_CLOUD_ECS_METADATA_DISABLED"] = "true"
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"
    if pycache is not None:
        os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
        os.environ["PYTHONPYCACHEPREFIX"] = str(pycache)


def child_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a server under test: this one, cleaned, with HOME in a temporary directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_STRIPPED_PREFIXES) and k not in PROXY_VARS}
    env.update({"HOME": str(home), "ALIBABA_CLOUD_ECS_METADATA_DISABLED": "true", "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


def sms_mcp_argv() -> list[str]:
    """``sms-mcp serve`` as a host runs it: the installed console script if there is one, else ``-m sms_mcp``."""
    script = Path(sys.executable).parent / "sms-mcp"
    if script.is_file():
        return [sys.executable, str(script), "serve"]
    return [sys.executable, "-m", "sms_mcp", "serve"]


def bare_argv() -> list[str]:
    return [sys.executable, str(BENCH_DIR / "bare_server.py")]


# ------------------------------------------------------------------------------------------------ description
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, str]:
    return {
        "CPU": cpu_model(),
        "cores": str(os.cpu_count()),
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "OS": platform.platform(),
    }


def package_versions() -> dict[str, str]:
    """mcp, sms-mcp, every alibabacloud-* distribution, and the libraries on the measured paths."""
    wanted = {"mcp", "mcp-types", "sms-mcp", "darabonba-core", "aiohttp", "pydantic", "phonenumbers", "uvicorn"}
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        name = (dist.metadata["Name"] or "").lower()
        canonical = re.sub(r"[-_.]+", "-", name)
        if canonical in wanted or canonical.startswith("alibabacloud-"):
            found[canonical] = dist.version
    return dict(sorted(found.items()))


# ------------------------------------------------------------------------------------------------ the emulator
class _ChildProcess:
    """A helper process of the benchmark (``self.proc``), stopped with SIGTERM (SIGKILL after 10 s) on exit."""

    proc: subprocess.Popen[str] | None = None

    def __exit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stdout:
            proc.stdout.close()


class EmulatorProcess(_ChildProcess):
    """``sms-mcp emulator`` on 127.0.0.1 in its own process: the client under test does not share its GIL.

    With ``tls=True`` it serves HTTPS (``--tls``) and ``ca_file`` is the test CA to trust."""

    def __init__(self, home: Path, *, tls: bool = False) -> None:
        self.home = home
        self.tls = tls
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.endpoint = ""
        self.ca_file: Path | None = None

    def __enter__(self) -> EmulatorProcess:
        argv = [sys.executable, "-m", "sms_mcp", "emulator", "--host", "127.0.0.1", "--port", "0",
                "--receipt-delay", "0", "--log-level", "WARNING"]
        if self.tls:
            # The CA where the benchmark can find it; the emulator's state stays in memory, as for item 3.
            argv += ["--tls", "--tls-dir", str(self.home / "emulator-tls")]
            self.ca_file = self.home / "emulator-tls" / "emulator-ca.pem"
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     env=child_env(self.home), cwd=REPO_ROOT)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # "emulator listening on http(s)://127.0.0.1:PORT"
        match = re.search(r"(https?://127\.0\.0\.1:\d+)", line)
        if not match:
            self.__exit__()
            raise RuntimeError(f"the emulator did not start: {line!r}")
        self.url = match.group(1)
        self.endpoint = self.url.split("://", 1)[1]
        return self



class LatencyProxyProcess(_ChildProcess):
    """``bench/latency_proxy.py`` in front of ``upstream`` (host:port on loopback), in its own process."""

    def __init__(self, upstream: str, one_way_ms: float) -> None:
        self.upstream = upstream
        self.one_way_ms = one_way_ms
        self.proc: subprocess.Popen[str] | None = None
        self.endpoint = ""

    def __enter__(self) -> LatencyProxyProcess:
        argv = [sys.executable, "-m", "bench.latency_proxy", "--upstream", self.upstream,
                "--one-way-ms", str(self.one_way_ms)]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     cwd=REPO_ROOT)
        assert self.proc.stdout is not None
        match = re.search(r"(127\.0\.0\.1:\d+)", self.proc.stdout.readline())
        if not match:
            self.__exit__()
            raise RuntimeError("the latency proxy did not start")
        self.endpoint = match.group(1)
        return self

