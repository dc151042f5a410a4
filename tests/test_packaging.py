"""Packaging: sdist and wheel, the plugin as certbot sees it, systemd units,
man page, and the Debian package under Debian's own certbot 2.1.

Marked ``packaging`` (select or skip them with ``-m packaging``); they run in
the normal suite too. The .deb tests need root (apt-get, dpkg-buildpackage)
and skip with the reason otherwise. Everything is built from a copy of the
work tree in a temporary directory, so the tree stays clean; packages
installed by the install test are removed again.
"""
from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.packaging

ROOT = Path(__file__).resolve().parent.parent
SERVICE = ROOT / "packaging" / "systemd" / "certbot-dane.service"
TIMER = ROOT / "packaging" / "systemd" / "certbot-dane.timer"
MANPAGE = ROOT / "packaging" / "man" / "certbot-dane.8"
DEB_NAME = "python3-certbot-dane"
# A PATH without pyenv shims or virtualenvs: Debian's tools must find
# Debian's python3.
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
# Left out when the tree is not a git checkout.
_IGNORED_COPY = {".git", ".venv", ".tox", "build", "dist", "__pycache__", ".pytest_cache",
                 ".ruff_cache", ".mypy_cache", ".hypothesis", ".lab", "_build", ".pybuild"}


def _run(argv: list[str], timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )
    assert done.returncode == 0, (
        f"{' '.join(map(str, argv))} exited {done.returncode}\n"
        f"stdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-4000:]}"
    )
    return done


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(extra)
    return env


def _system_env() -> dict[str, str]:
    """What Debian's tools should see: no virtualenv, no pyenv, no user site."""
    return {
        "PATH": SYSTEM_PATH,
        "HOME": os.environ.get("HOME", "/root"),
        "LC_ALL": "C.UTF-8",
        "DEBIAN_FRONTEND": "noninteractive",
        "PYTHONNOUSERSITE": "1",
    }


def _copy_tree(dest: Path) -> Path:
    """Copy the files git would commit (tracked and new, not ignored) to dest."""
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True, timeout=60, check=False,
    )
    if listed.returncode == 0 and listed.stdout:
        for name in sorted(set(listed.stdout.decode().split("\0")) - {""}):
            src = ROOT / name
            if not src.is_file():  # deleted in the work tree, not yet in the index
                continue
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
    else:  # not a git checkout: copy everything but caches and environments
        shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(*_IGNORED_COPY, "*.egg-info"),
                        dirs_exist_ok=True)
    return dest


# sdist and wheel ------------------------------------------------------------


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("pybuild")
    src = _copy_tree(work / "src")
    out = work / "dist"
    env = _clean_env()
    # Probed in a child: in this process a build/ directory of the work tree
    # may pass for the package.
    probe = subprocess.run([sys.executable, "-c", "import build.__main__"], cwd=work, env=env,
                           capture_output=True, timeout=60, check=False)
    if probe.returncode != 0:
        # `build` belongs in requirements/test.txt; until then, bring it in
        # beside the environment rather than into it.
        tools = work / "buildtool"
        _run([sys.executable, "-m", "pip", "install", "--quiet", "--target", str(tools), "build"])
        env["PYTHONPATH"] = str(tools)
    _run([sys.executable, "-m", "build", "--outdir", str(out), str(src)], env=env, cwd=work)
    sdists = list(out.glob("certbot_dane-*.tar.gz"))
    wheels = list(out.glob("certbot_dane-*-py3-none-any.whl"))
    assert len(sdists) == 1 and len(wheels) == 1, sorted(p.name for p in out.iterdir())
    return {"sdist": sdists[0], "wheel": wheels[0]}


def test_build_makes_sdist_and_wheel(dists: dict[str, Path]) -> None:
    with zipfile.ZipFile(dists["wheel"]) as whl:
        names = whl.namelist()
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        text = whl.read(entry_points).decode()
        metadata = whl.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "certbot_dane/installer.py" in names
    assert "certbot_dane/cli.py" in names
    assert not any(n.startswith("tests/") for n in names)
    assert "[certbot.plugins]" in text
    assert "dane = certbot_dane.installer:Installer" in text
    assert "certbot-dane = certbot_dane.cli:main" in text
    # Floors at or below Debian bookworm, no ceilings (certbot 2.1 resolves them).
    requires = [line for line in metadata.splitlines()
                if line.startswith("Requires-Dist:") and "extra ==" not in line]
    assert any("certbot>=2.1.0" in r.replace(" ", "") for r in requires), requires
    assert not any("<" in r for r in requires), requires


@pytest.fixture(scope="module")
def wheel_venv(dists: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding only the built wheel.

    Its dependencies (certbot, acme, dnspython, ...) come from the running
    environment through a .pth file pointing at a view of its site-packages
    without certbot-dane itself (no editable finder, no .pth files), so what
    is tested is the wheel, without downloading anything.
    """
    work = tmp_path_factory.mktemp("wheelvenv")
    view = work / "deps"
    view.mkdir()
    purelib = Path(sysconfig.get_paths()["purelib"])
    for entry in purelib.iterdir():
        name = entry.name.lower()
        if (name.startswith(("certbot_dane", "certbot-dane", "__editable__"))
                or name.endswith(".pth")):
            continue
        (view / entry.name).symlink_to(entry)
    venv = work / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    site = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                env=_clean_env()).stdout.strip()
    Path(site, "_project_deps.pth").write_text(f"{view}\n")
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
          "--no-deps", "--no-index", str(dists["wheel"])], env=_clean_env())
    return venv


def test_wheel_installs_plugin_and_command(wheel_venv: Path, tmp_path: Path) -> None:
    python = wheel_venv / "bin" / "python"
    env = _clean_env()
    origin = _run([str(python), "-c", "import certbot_dane; print(certbot_dane.__file__)"],
                  env=env, cwd=tmp_path).stdout.strip()
    assert origin.startswith(str(wheel_venv)), origin

    certbot = [str(python), "-c", "import sys; from certbot.main import main; sys.exit(main())"]
    dirs = ["--config-dir", str(tmp_path / "etc"), "--work-dir", str(tmp_path / "work"),
            "--logs-dir", str(tmp_path / "log")]
    listed = _run([*certbot, "plugins", "--installers", "--prepare", *dirs],
                  env=env, cwd=tmp_path).stdout
    assert "* dane" in listed, listed
    # 5.x prints the EntryPoint's repr, 2.x "dane = module:Class".
    assert "certbot_dane.installer:Installer" in listed, listed
    assert "Initialized: <certbot_dane.installer.Installer" in listed, listed

    command = wheel_venv / "bin" / "certbot-dane"
    assert command.is_file()
    helped = _run([str(command), "--help"], env=env, cwd=tmp_path).stdout
    assert "check" in helped and "status" in helped
    empty = tmp_path / "empty"
    empty.mkdir()
    logs = _logs_args(command, tmp_path / "logs")
    status = _run([str(command), "--config-dir", str(empty), *logs, "status"],
                  env=env, cwd=tmp_path)
    assert "no lineage is managed" in status.stdout
    missing = subprocess.run(
        [str(command), "--config-dir", str(tmp_path / "nope"), *logs, "check"],
        capture_output=True, text=True, env=env, timeout=60, check=False)
    assert missing.returncode == 2, missing


# systemd units and man page -------------------------------------------------


def _logs_args(command: str | Path, logs: Path) -> list[str]:
    """--logs-dir when the command has it, so no test writes /var/log/letsencrypt."""
    helped = subprocess.run([str(command), "--help"], capture_output=True, text=True,
                            timeout=60, check=False, env=_clean_env())
    return ["--logs-dir", str(logs)] if "--logs-dir" in helped.stdout else []


def _unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(path)
    return parser


def test_units_say_what_they_should() -> None:
    service = _unit(SERVICE)
    assert service["Service"]["Type"] == "oneshot"
    assert service["Service"]["ExecStart"] == (
        "/usr/bin/certbot-dane --quiet check --finish-within 240"
    )
    assert service["Service"]["ProtectSystem"] in ("full", "strict")
    assert "/etc/letsencrypt" in service["Service"]["ReadWritePaths"].split()
    assert service["Service"]["PrivateTmp"] == "true"
    assert service["Service"]["NoNewPrivileges"] == "true"
    assert "PrivateNetwork" not in service["Service"]
    assert "Install" not in service  # started by the timer only
    timer = _unit(TIMER)
    assert timer["Timer"]["OnCalendar"] == "*:0/5"
    assert timer["Timer"]["Persistent"] == "true"
    assert timer["Install"]["WantedBy"] == "timers.target"


def _seconds(text: str) -> float:
    """A systemd time span in the forms the units use: 30, 30s, 15min."""
    match = re.fullmatch(r"(\d+)(s|min)?", text)
    assert match, f"not a time span this test reads: {text!r}"
    return float(match[1]) * (60 if match[2] == "min" else 1)


def test_a_finishing_check_ends_before_the_next_elapse() -> None:
    """The service's run waits for holds ending within --finish-within seconds: it must
    end before the timer's next elapse (which systemd would skip while it runs), with
    time left for the checks themselves, and well within the start timeout."""
    service = _unit(SERVICE)["Service"]
    argv = service["ExecStart"].split()
    within = float(argv[argv.index("--finish-within") + 1])
    timer = _unit(TIMER)["Timer"]
    every = re.fullmatch(r"\*:0/(\d+)", timer["OnCalendar"])
    assert every, timer["OnCalendar"]
    period = 60.0 * int(every[1])
    closest = period - _seconds(timer.get("RandomizedDelaySec", "0"))  # two starts, at least
    assert within <= closest - 30, (within, closest)
    assert within > closest / 2, "most of the period is covered"
    assert _seconds(service["TimeoutStartSec"]) >= 2 * period


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    units = [tmp_path / SERVICE.name, tmp_path / TIMER.name]
    shutil.copy(SERVICE, units[0])
    shutil.copy(TIMER, units[1])
    done = subprocess.run([analyze, "verify", "--man=no", *map(str, units)],
                          capture_output=True, text=True, timeout=120, check=False)
    problems = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    if not Path("/usr/bin/certbot-dane").exists():
        # Only the installed package provides the command; the .deb test
        # verifies the installed units with this check included.
        problems = [p for p in problems if "/usr/bin/certbot-dane is not executable" not in p]
    assert not problems, problems


def test_man_page_renders_without_warnings() -> None:
    groff = shutil.which("groff")
    if groff is None:
        pytest.skip("groff is not installed (apt-get install groff-base)")
    warnings = subprocess.run([groff, "-man", "-Tutf8", "-ww", "-z", str(MANPAGE)],
                              capture_output=True, text=True, timeout=60, check=False)
    assert warnings.returncode == 0 and not warnings.stderr.strip(), warnings.stderr
    page = _run([groff, "-man", "-Tutf8", str(MANPAGE)], env=_clean_env(LC_ALL="C.UTF-8")).stdout
    page = re.sub(".\b", "", page).replace("\u2010", "-")  # overstrikes, hyphenation points
    for heading in ("NAME", "SYNOPSIS", "COMMANDS", "OPTIONS", "EXIT STATUS", "FILES",
                    "SEE ALSO"):
        assert f"\n{heading}\n" in page, heading
    for text in ("--config-dir", "--quiet", "check", "status", "print", "verify", "reset",
                 "import-alnitak", "/etc/letsencrypt/dane/", "/etc/letsencrypt/dane-state/",
                 "certbot(1)"):
        assert text in page, text


# Debian package -------------------------------------------------------------


def _is_root() -> bool:
    return os.geteuid() == 0


def _ensure_build_tools() -> None:
    needed = ("dpkg-buildpackage", "dh", "dh_python3")
    if all(shutil.which(t, path=SYSTEM_PATH) for t in needed):
        pyproject_plugin = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", "pybuild-plugin-pyproject"],
            capture_output=True, text=True, check=False)
        if pyproject_plugin.stdout == "install ok installed":
            return
    if shutil.which("apt-get") is None:
        pytest.skip("no apt-get: the .deb is built on Debian or Ubuntu only")
    if not _is_root():
        pytest.skip("the Debian build tools are missing and installing them needs root: "
                    "run scripts/install-packaging-tools.sh as root")
    _run(["bash", str(ROOT / "scripts" / "install-packaging-tools.sh")], timeout=900,
         env={**_system_env(), **{k: v for k, v in os.environ.items() if k.startswith("http")}})


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _ensure_build_tools()
    work = tmp_path_factory.mktemp("debbuild")
    src = _copy_tree(work / "certbot-dane")
    _run(["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=src, env=_system_env(), timeout=600)
    debs = list(work.glob(f"{DEB_NAME}_*_all.deb"))
    assert len(debs) == 1, sorted(p.name for p in work.iterdir())
    return debs[0]


def test_deb_contents(deb: Path) -> None:
    listing = _run(["dpkg-deb", "-c", str(deb)]).stdout
    paths = {line.split()[-1].lstrip(".") for line in listing.splitlines() if line.strip()}
    for path in (
        "/usr/lib/python3/dist-packages/certbot_dane/",
        "/usr/lib/python3/dist-packages/certbot_dane/installer.py",
        "/usr/bin/certbot-dane",
        "/lib/systemd/system/certbot-dane.service",
        "/lib/systemd/system/certbot-dane.timer",
        "/usr/share/man/man8/certbot-dane.8.gz",
    ):
        assert path in paths, (path, sorted(paths))
    assert any(p.startswith("/usr/lib/python3/dist-packages/certbot_dane-0.1.0.")
               and p.endswith("/entry_points.txt") for p in paths), sorted(paths)
    depends = _run(["dpkg-deb", "-f", str(deb), "Depends"]).stdout
    for dep in ("python3-certbot (>= 2.1)", "python3-dnspython", "python3-cryptography"):
        assert dep in depends, depends


DEBIAN_SMOKE = """
import importlib, pkgutil, sys
from pathlib import Path

import certbot_dane
from certbot_dane import tlsa

OPTIONAL = {"boto3", "botocore", "google", "ovh"}  # extras_require, imported by their store only
failed = []
for module in pkgutil.walk_packages(certbot_dane.__path__, "certbot_dane."):
    try:
        importlib.import_module(module.name)
    except ModuleNotFoundError as err:
        if (err.name or "").split(".")[0] not in OPTIONAL:
            failed.append(f"{module.name}: {err!r}")
    except Exception as err:
        failed.append(f"{module.name}: {err!r}")

bundle = Path("/etc/ssl/certs/ca-certificates.crt")
if bundle.is_file():
    try:
        chain = tlsa.load_pem_chain(bundle.read_bytes())
        assert len(chain) > 1, len(chain)
        for selector in (0, 1):
            for mtype in (0, 1, 2):
                tlsa.association(chain[0], selector, mtype)
    except Exception as err:
        failed.append(f"tlsa on Debian's cryptography: {err!r}")

print("\\n".join(failed), file=sys.stderr)
sys.exit(1 if failed else 0)
"""


def _installed_packages() -> set[str]:
    """Packages installed now (not those removed with their configuration kept)."""
    done = _run(["dpkg-query", "-W", "-f=${Package} ${db:Status-Abbrev}\\n"])
    return {line.split()[0] for line in done.stdout.splitlines()
            if len(line.split()) > 1 and line.split()[1].startswith("ii")}


def _apt(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["apt-get", "-y", "-q", "-o", "DPkg::Lock::Timeout=120",
         "-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold",
         *args],
        capture_output=True, text=True, timeout=timeout, check=False, env=_system_env(),
    )


# Debian's certbot 2.1 as the `certbot` package runs it (/usr/bin/certbot is
# an entry-point script for certbot.main:main).
CERTBOT_MAIN = ["/usr/bin/python3", "-c",
                "import sys; from certbot.main import main; sys.exit(main())"]


@pytest.fixture
def debian_certbot(deb: Path) -> Iterator[list[str]]:
    """Install the .deb with Debian's certbot 2.1; afterwards remove what was added.

    Yields the certbot command line to run. The `certbot` package (the
    /usr/bin/certbot command, a timer and a cron job) is installed only when
    /etc/letsencrypt and /var/log/letsencrypt do not exist: purging it deletes
    both. Otherwise python3-certbot alone is installed and certbot.main runs
    through Debian's python3, which is what /usr/bin/certbot does.
    """
    if not _is_root() or shutil.which("apt-get") is None:
        pytest.skip("installing the .deb needs root and apt-get")
    before = _installed_packages()
    with_command = "certbot" in before or not any(
        Path(p).exists() for p in ("/etc/letsencrypt", "/var/log/letsencrypt"))
    candidate = subprocess.run(["apt-cache", "policy", "python3-certbot"], capture_output=True,
                               text=True, check=False, env=_system_env()).stdout
    if "Candidate:" not in candidate or "Candidate: (none)" in candidate:
        _apt("update")
    try:
        extra = ["certbot"] if with_command else []
        done = _apt("install", "--no-install-recommends", str(deb), *extra)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        yield ["/usr/bin/certbot"] if with_command else CERTBOT_MAIN
    finally:
        added = sorted(_installed_packages() - before)
        if added:
            _apt("purge", *added)
        left = sorted(_installed_packages() - before)
        assert not left, f"could not remove {left}"


def test_deb_loads_under_debian_certbot_21(debian_certbot: list[str], tmp_path: Path) -> None:
    env = _system_env()
    version = _run([*debian_certbot, "--version"], env=env).stdout.strip()
    dirs = ["--config-dir", str(tmp_path / "etc"), "--work-dir", str(tmp_path / "work"),
            "--logs-dir", str(tmp_path / "log")]
    listed = _run([*debian_certbot, "plugins", "--installers", "--prepare", *dirs],
                  env=env, cwd=tmp_path)
    out = listed.stdout
    assert "* dane" in out, out + listed.stderr
    assert "Entry point: dane = certbot_dane.installer:Installer" in out, out
    assert "Initialized: <certbot_dane.installer.Installer" in out, out
    show = "import certbot, certbot_dane; print(certbot.__version__, certbot_dane.__file__)"
    origin = _run(["/usr/bin/python3", "-c", show], env=env, cwd=tmp_path).stdout
    assert origin.startswith("2.1.") and "/usr/lib/python3/dist-packages/certbot_dane/" in origin, (
        version, origin)

    # Every module imports on Debian's dnspython and cryptography (an
    # optional store SDK may be missing), and a PEM chain loads and hashes.
    smoke = tmp_path / "smoke.py"
    smoke.write_text(DEBIAN_SMOKE)
    _run(["/usr/bin/python3", str(smoke)], env=env, cwd=tmp_path)

    helped = _run(["/usr/bin/certbot-dane", "--help"], env=env, cwd=tmp_path).stdout
    assert "check" in helped and "status" in helped
    empty = tmp_path / "empty"
    empty.mkdir()
    logs = _logs_args("/usr/bin/certbot-dane", tmp_path / "logs")
    status = _run(["/usr/bin/certbot-dane", "--config-dir", str(empty), *logs, "status"], env=env)
    assert "no lineage is managed" in status.stdout

    # Images that drop /usr/share/man (dpkg path-exclude) install no man page.
    has_man = Path("/usr/share/man/man8/certbot-dane.8.gz").exists()
    analyze = shutil.which("systemd-analyze", path=SYSTEM_PATH)
    if analyze:  # the installed units, with ExecStart= (and man:) resolvable
        verify = subprocess.run(
            [analyze, "verify", *([] if has_man else ["--man=no"]),
             "/lib/systemd/system/certbot-dane.service", "/lib/systemd/system/certbot-dane.timer"],
            capture_output=True, text=True, timeout=120, check=False, env=env)
        assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr
    if has_man and shutil.which("man", path=SYSTEM_PATH):
        man = _run(["man", "-P", "cat", "8", "certbot-dane"], env={**env, "MANWIDTH": "80"})
        assert "EXIT STATUS" in man.stdout
