"""Every way the exec store's program can end, and the one line that says so.

The exec contract gives each exit code a meaning (0 done; 1 "already there"
for publish and "the live record is not up yet" for delete; 2 to 127 an
error; 128 and above a soft error); a program can also be killed, outlive
``--dane-exec-timeout``, or not start at all. Each case is run here with a
real program and its message matched whole: the program's path, how it
ended, what that means in the contract and what to do, on one line, never
with the program's arguments (they may hold a secret). No DNS is needed:
the zone lookup is replaced.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from certbot_dane.dns.base import SoftStoreError
from certbot_dane.dns.exec import FIXED_PATH, ExecError, ExecStore
from certbot_dane.tlsa import Record

OWNER = "_25._tcp.exit.dane.test."
OLD = Record(OWNER, 3, 1, 1, "e5" * 32)
NEW = Record(OWNER, 3, 1, 1, "f6" * 32)
SECRET = "hmac-sha256:dGhpcyBpcyBhIGZha2UgdHNpZyBzZWNyZXQ="
PUBLISH = f"exec store: cannot publish {OLD.short()}"
DELETE = f"exec store: cannot delete {OLD.short()}"
ERROR = (
    "by the exec contract, 2 to 127 is an error: fix what the program reports, then run "
    "'certbot-dane check'"
)
SOFT = (
    "by the exec contract, 128 and above is a soft error (a passing problem, such as an "
    "unreachable server): the next check retries"
)


def script(path: Path, body: str, mode: int = 0o755) -> Path:
    path.write_text(body)
    path.chmod(mode)
    return path


def offline(command: str, timeout: float = 30) -> ExecStore:
    """A store whose zone lookup needs no DNS; the program gets a secret argument."""
    store = ExecStore(f"{command} --key {SECRET}", timeout=timeout)
    store.zone_of = lambda owner: "dane.test"  # type: ignore[method-assign]
    return store


def run(store: ExecStore, operation: str, live: bool = True) -> None:
    if operation == "publish":
        store.add([OLD], 60)
    else:
        store.delete([OLD], keep=[NEW] if live else [])


def failure(store: ExecStore, operation: str = "publish", live: bool = True) -> ExecError:
    """The ExecError of one run, checked to be one line without the program's arguments."""
    with pytest.raises(ExecError) as info:
        run(store, operation, live)
    message = str(info.value)
    assert "\n" not in message and SECRET not in message and "--key" not in message
    return info.value


@pytest.fixture
def exits(tmp_path: Path) -> tuple[ExecStore, str]:
    """A program that exits with the code in $CODE after two lines on stderr."""
    program = script(
        tmp_path / "exit.sh",
        '#!/bin/sh\necho "first line" >&2\necho "zone refused the update" >&2\nexit "$CODE"\n',
    )
    return offline(str(program)), str(program)


def with_code(store: ExecStore, code: int) -> ExecStore:
    environment = store.environment

    def coded(operation, record, extra):  # type: ignore[no-untyped-def]
        return {**environment(operation, record, extra), "CODE": str(code)}

    store.environment = coded  # type: ignore[method-assign]
    return store


# Success -------------------------------------------------------------------------


@pytest.mark.parametrize("operation", ["publish", "delete"])
def test_exit_0_is_done(exits: tuple[ExecStore, str], operation: str) -> None:
    run(with_code(exits[0], 0), operation)


def test_publish_exit_1_means_already_there(exits: tuple[ExecStore, str]) -> None:
    run(with_code(exits[0], 1), "publish")


# Exit codes the contract defines -------------------------------------------------------


def test_delete_exit_1_means_the_live_record_is_not_up_yet(exits: tuple[ExecStore, str]) -> None:
    store, program = exits
    error = failure(with_code(store, 1), "delete")
    assert (error.exit_code, isinstance(error, SoftStoreError)) == (1, False)
    assert str(error) == (
        f"{DELETE} yet: program {program!r} exited 1 and said \"zone refused the update\"; by "
        "the exec contract, exit 1 on delete means the live record (TLSA_LIVE_HASH) is not up "
        "yet: the next check asks again; if this persists, make the program see the record "
        "TLSA_LIVE_HASH names, which certbot-dane's own checks already see"
    )


def test_delete_exit_1_without_a_live_record(exits: tuple[ExecStore, str]) -> None:
    store, program = exits
    error = failure(with_code(store, 1), "delete", live=False)
    assert str(error) == (
        f"{DELETE}: program {program!r} exited 1 and said \"zone refused the update\"; by the "
        "exec contract, exit 1 on delete means the live record (TLSA_LIVE_HASH) is not up yet, "
        "but none was given: make the program exit 0 when the record is deleted or absent, "
        "and 2 to 127 on an error"
    )


@pytest.mark.parametrize("code", [2, 125])
@pytest.mark.parametrize("operation", ["publish", "delete"])
def test_exit_2_to_127_is_an_error(
    exits: tuple[ExecStore, str], operation: str, code: int
) -> None:
    store, program = exits
    error = failure(with_code(store, code), operation)
    assert (error.exit_code, isinstance(error, SoftStoreError)) == (code, False)
    start = PUBLISH if operation == "publish" else DELETE
    assert str(error) == (
        f"{start}: program {program!r} exited {code} and said \"zone refused the update\"; "
        f"{ERROR}"
    )


def test_an_error_without_a_word(tmp_path: Path) -> None:
    program = script(tmp_path / "mute.sh", "#!/bin/sh\nexit 3\n")
    error = failure(offline(str(program)))
    assert str(error) == (
        f"{PUBLISH}: program {str(program)!r} exited 3 and wrote nothing to stderr; {ERROR}"
    )


def test_127_is_a_command_the_program_runs_that_is_not_found(tmp_path: Path) -> None:
    """The environment is replaced: a command found in an operator's shell may
    not be in the program's PATH."""
    program = script(tmp_path / "needs.sh", "#!/bin/sh\nnsupdate-not-installed -k key\n")
    error = failure(offline(str(program)))
    assert error.exit_code == 127
    assert str(error) == (
        f"{PUBLISH}: program {str(program)!r} exited 127 and said \"{program}: 2: "
        "nsupdate-not-installed: not found\"; by the exec contract, 2 to 127 is an error, and "
        "127 is also a shell's 'command not found': the program's PATH is only "
        f"{FIXED_PATH}, so give the command it runs its full path, or install it"
    )


def test_126_is_a_command_the_program_runs_that_is_not_executable(tmp_path: Path) -> None:
    helper = script(tmp_path / "helper.sh", "#!/bin/sh\nexit 0\n", mode=0o644)
    program = script(tmp_path / "calls.sh", f"#!/bin/sh\n{helper}\n")
    error = failure(offline(str(program)))
    assert error.exit_code == 126
    assert str(error) == (
        f"{PUBLISH}: program {str(program)!r} exited 126 and said \"{program}: 2: {helper}: "
        "Permission denied\"; by the exec contract, 2 to 127 is an error, and 126 is also a "
        "shell's 'command not executable': make the command the program runs executable"
    )


@pytest.mark.parametrize("code", [128, 200, 255])
@pytest.mark.parametrize("operation", ["publish", "delete"])
def test_128_and_above_is_a_soft_error(
    exits: tuple[ExecStore, str], operation: str, code: int
) -> None:
    store, program = exits
    error = failure(with_code(store, code), operation)
    assert (error.exit_code, isinstance(error, SoftStoreError)) == (code, True)
    start = PUBLISH if operation == "publish" else DELETE
    assert str(error) == (
        f"{start}: program {program!r} exited {code} and said \"zone refused the update\"; "
        f"{SOFT}"
    )


# Ends the contract does not choose ------------------------------------------------------


def test_killed_by_a_signal_is_a_soft_error(tmp_path: Path) -> None:
    program = script(tmp_path / "die.sh", "#!/bin/sh\necho 'about to go' >&2\nkill -KILL $$\n")
    error = failure(offline(str(program)))
    assert (error.exit_code, isinstance(error, SoftStoreError)) == (128 + 9, True)
    assert str(error) == (
        f"{PUBLISH}: program {str(program)!r} was killed by signal 9 (SIGKILL) and said "
        "\"about to go\"; a soft error, retried at the next check: if it recurs, find what "
        "kills it (the kernel's out-of-memory killer, a service manager, an administrator)"
    )


def test_a_program_that_outlives_the_timeout_is_killed_softly(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    program = script(
        tmp_path / "hang.sh",
        f"#!/bin/sh\nsleep 600 &\necho $$ $! > {pids}\necho 'waiting for 192.0.2.53' >&2\n"
        "sleep 600\n",
    )
    error = failure(offline(str(program), timeout=1))
    assert isinstance(error, SoftStoreError) and error.exit_code is None
    assert str(error) == (
        f"{PUBLISH}: program {str(program)!r} did not finish within 1 s and was killed with "
        "every process it started (its last words: \"waiting for 192.0.2.53\"); a soft error, "
        "retried at the next check: find out why it hangs (a server that does not answer?) or "
        "raise --dane-exec-timeout"
    )
    for pid in (int(p) for p in pids.read_text().split()):
        deadline = time.monotonic() + 5
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(pid), f"process {pid} survived the timeout"


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its reaper counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


# Programs that do not start ----------------------------------------------------------------


def test_program_not_found(tmp_path: Path) -> None:
    gone = tmp_path / "gone.sh"
    error = failure(offline(str(gone)))
    assert error.exit_code is None and not isinstance(error, SoftStoreError)
    assert str(error) == (
        f"{PUBLISH}: program {str(gone)!r} does not exist; give --dane-exec the program's "
        "full path"
    )


def test_program_not_in_the_fixed_path() -> None:
    error = failure(offline("nsupdate-tlsa-not-installed"))
    assert str(error) == (
        f"{PUBLISH}: program 'nsupdate-tlsa-not-installed' is not in the PATH programs get "
        f"({FIXED_PATH}); give --dane-exec the program's full path"
    )


def test_interpreter_not_found(tmp_path: Path) -> None:
    program = script(tmp_path / "py.sh", "#!/usr/bin/python2.4 -u\nprint 'hello'\n")
    error = failure(offline(str(program)))
    assert str(error) == (
        f"{PUBLISH}: the interpreter '/usr/bin/python2.4' on the #! line of {str(program)!r} "
        "does not exist; fix that line or install the interpreter"
    )


def test_program_not_executable(tmp_path: Path) -> None:
    program = script(tmp_path / "plain.sh", "#!/bin/sh\nexit 0\n", mode=0o644)
    error = failure(offline(str(program)))
    assert str(error) == (
        f"{PUBLISH}: program {str(program)!r} is not executable (permission denied); make it "
        "executable (chmod 755), on a file system not mounted noexec"
    )


def test_a_directory_is_not_a_program(tmp_path: Path) -> None:
    error = failure(offline(str(tmp_path)))
    assert str(error) == (
        f"{PUBLISH}: {str(tmp_path)!r} is a directory, not a program; give --dane-exec the "
        "program's full path"
    )


def test_a_file_that_is_not_a_program(tmp_path: Path) -> None:
    program = tmp_path / "data.bin"
    program.write_bytes(b"\x00\x01\x02 not a script and not a binary\n")
    program.chmod(0o755)
    error = failure(offline(str(program)))
    assert str(error) == (
        f"{PUBLISH}: {str(program)!r} is not a program this system can run (exec format "
        "error): a script needs a #! line, a binary must be built for this machine"
    )
