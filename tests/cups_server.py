"""A real, private CUPS server for printing tests: Debian's cupsd with a cups-pdf queue.

``running_cupsd()`` starts ``cupsd -f`` (foreground, so the test owns its pid) with its
own configuration, spool and state in a temporary folder, listening only on a unix socket there; clients
find it through ``CUPS_SERVER`` (set in the returned environment). It adds the queue
``QUEUE`` printing through cups-pdf, whose PDFs land in ``$HOME/PDF`` of the submitting user
(root: ``/root/PDF``, from /etc/cups/cups-pdf.conf). The server is stopped by its pid.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

QUEUE = "kioskpdf"
CUPSD = "/usr/sbin/cupsd"
CUPS_PDF_PPD = "lsb/usr/cups-pdf/CUPS-PDF_opt.ppd"
START_TIMEOUT_S = 15.0


def missing() -> str | None:
    """Why a CUPS test can't run here (None: it can)."""
    if not Path(CUPSD).exists():
        return "cupsd is not installed (apt-get install cups cups-bsd printer-driver-cups-pdf poppler-utils)"
    if not Path("/usr/lib/cups/backend/cups-pdf").exists():
        return "the cups-pdf backend is missing (apt-get install printer-driver-cups-pdf)"
    for tool in ("lp", "lpstat", "lpadmin", "cupsdisable", "pdftotext"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install cups-bsd cups-client poppler-utils)"
    if os.geteuid() != 0:
        return "cupsd and the cups-pdf backend need root"
    return None


def pdf_folder() -> Path:
    return Path(pwd.getpwuid(os.geteuid()).pw_dir) / "PDF"


@contextmanager
def running_cupsd() -> Iterator[dict[str, str]]:
    """Start a private cupsd with the queue QUEUE; yields the environment for CUPS clients.

    Its folder is a fresh one in /tmp that the ``lp`` user (CUPS runs its filters as ``lp``) can
    enter: pytest's own temporary folders are private to root, and the filters fail there.
    """
    folder = Path(tempfile.mkdtemp(prefix="mp-cups-", dir="/tmp"))
    folder.chmod(0o755)
    for sub in ("spool", "cache", "state", "log", "ppd"):
        (folder / sub).mkdir(exist_ok=True)
    sock = folder / "cups.sock"
    (folder / "cupsd.conf").write_text(
        f"Listen {sock}\nLogLevel warn\nWebInterface No\nBrowsing Off\nPreserveJobFiles No\n"
        "<Location />\n  Order allow,deny\n  Allow all\n</Location>\n"
        "<Policy default>\n  JobPrivateAccess default\n  JobPrivateValues default\n"
        "  SubscriptionPrivateAccess default\n  SubscriptionPrivateValues default\n"
        "  <Limit All>\n    Order deny,allow\n  </Limit>\n</Policy>\n"
    )
    (folder / "cups-files.conf").write_text(
        f"ServerRoot {folder}\nRequestRoot {folder}/spool\nCacheDir {folder}/cache\nStateDir {folder}/state\n"
        f"AccessLog {folder}/log/access_log\nErrorLog {folder}/log/error_log\nPageLog {folder}/log/page_log\n"
        "SystemGroup root\n"
    )
    log = open(folder / "log" / "cupsd.out", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [CUPSD, "-f", "-c", str(folder / "cupsd.conf"), "-s", str(folder / "cups-files.conf")],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    env = {**os.environ, "CUPS_SERVER": str(sock)}
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _answers(env):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"cupsd did not start: {(folder / 'log' / 'cupsd.out').read_text()[-2000:]}")
            time.sleep(0.05)  # polling a server that is starting up; there is no readiness signal
        subprocess.run(
            ["lpadmin", "-p", QUEUE, "-E", "-v", "cups-pdf:/", "-m", CUPS_PDF_PPD],
            env=env,
            check=True,
            capture_output=True,
            timeout=20,
        )
        yield env
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(folder, ignore_errors=True)


def _answers(env: dict[str, str]) -> bool:
    r = subprocess.run(["lpstat", "-r"], env=env, capture_output=True, timeout=5, check=False)
    return b"scheduler is running" in r.stdout


def pdfs() -> set[Path]:
    folder = pdf_folder()
    return set(folder.glob("*.pdf")) if folder.exists() else set()


def wait_for_pdf(before: set[Path], timeout_s: float = 30.0) -> Path:
    """The first finished cups-pdf output that was not there ``before``.

    cups-pdf names files after the title it finds in the PostScript it gets, which need not be
    the job's title, so the new file is found by comparison instead of by name.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for path in sorted(pdfs() - before):
            if path.stat().st_size > 0 and _complete(path):
                return path
        time.sleep(0.1)  # cups-pdf writes the file from its own process; poll with a deadline
    raise AssertionError(f"no new PDF in {pdf_folder()} within {timeout_s:.0f} s")


def _complete(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - 64))
        return b"%%EOF" in f.read()
