"""The shared services of a many-machine setup, started on one machine: a PostgreSQL cluster (the Optuna
studies' storage and the MLflow server's backend) and an MLflow tracking server that stores runs in it and
serves their artifacts itself (``--serve-artifacts``), so workers need no shared disk.

  python -m bench.services start [--dir services] [--host 127.0.0.1] [--pg-port 5432] [--mlflow-port 5000]
  python -m bench.services stop  [--dir services]
  python -m bench.services status [--dir services]

``start`` makes the cluster on first use (``initdb``; as the ``postgres`` user when run as root, since
PostgreSQL refuses root), creates the databases ``mlflow`` and ``studies``, starts both services, prints
the two URLs to hand to every worker, and stays in the foreground until Ctrl-C or SIGTERM, when it stops
both cleanly (``--detach`` returns at once instead; ``stop`` ends them later). Everything lives under
``--dir``: the cluster (``postgres/``), the artifacts (``artifacts/``), logs and pid files. Starting again
reuses the cluster and what it holds. Loopback by default; ``--host 0.0.0.0`` opens both to the network
(PostgreSQL then trusts any client: put it behind a firewall or add a password, docs/scaling.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

# every study worker and every tracking-server worker holds a pool of connections: PostgreSQL's default of
# 100 runs out at a few dozen workers
MAX_CONNECTIONS = 400


class ServiceError(RuntimeError):
    """A service that cannot start or stop; the message says why and where the log is."""


@dataclass(frozen=True)
class Services:
    root: Path
    host: str = "127.0.0.1"
    pg_port: int = 5432
    mlflow_port: int = 5000

    @property
    def pgdata(self) -> Path:
        return self.root / "postgres" / "data"

    @property
    def state_file(self) -> Path:
        return self.root / "services.json"

    def postgres_url(self, db: str) -> str:
        return f"postgresql+psycopg2://postgres@{self._client_host()}:{self.pg_port}/{db}"

    @property
    def mlflow_url(self) -> str:
        return f"http://{self._client_host()}:{self.mlflow_port}"

    def _client_host(self) -> str:
        return "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host


def pg_bin(name: str) -> str:
    """A PostgreSQL program: on PATH, else Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which(name) or next(iter(sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True)), None)
    if not found:
        raise ServiceError(f"PostgreSQL's {name} is not installed (Debian: apt-get install postgresql)")
    return str(found)


def _as_postgres() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def _pg(s: Services, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([*_as_postgres(), *cmd], cwd=s.pgdata.parent, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise ServiceError(f"{Path(cmd[0]).name} failed: {(r.stderr or r.stdout).strip()[-800:]}")
    return r


def start_postgres(s: Services) -> None:
    base = s.pgdata.parent
    base.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:  # the cluster belongs to the postgres user, who must reach its folder
        shutil.chown(base, "postgres")
        for p in [s.root, *s.root.parents]:
            if p == Path("/"):
                break
            os.chmod(p, os.stat(p).st_mode | 0o011)  # let others traverse (not list) the folders above
    if not (s.pgdata / "PG_VERSION").is_file():
        _pg(s, pg_bin("initdb"), "-D", str(s.pgdata), "--auth=trust", "-U", "postgres", "-E", "UTF8")
    listen = "*" if s.host in ("0.0.0.0", "") else s.host
    _pg(s, pg_bin("pg_ctl"), "-D", str(s.pgdata), "-l", str(base / "postgres.log"), "-w", "-t", "60", "-o",
        f"-p {s.pg_port} -k {base} -c listen_addresses={listen} -c max_connections={MAX_CONNECTIONS}", "start")
    for db in ("mlflow", "studies"):
        r = _pg(s, pg_bin("psql"), "-h", s._client_host(), "-p", str(s.pg_port), "-U", "postgres", "-tAc",
                f"SELECT 1 FROM pg_database WHERE datname = '{db}'")
        if r.stdout.strip() != "1":
            _pg(s, pg_bin("createdb"), "-h", s._client_host(), "-p", str(s.pg_port), "-U", "postgres", db)


def stop_postgres(s: Services) -> None:
    if (s.pgdata / "postmaster.pid").is_file():
        _pg(s, pg_bin("pg_ctl"), "-D", str(s.pgdata), "-m", "fast", "-w", "stop", check=False)


def healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def start_mlflow(s: Services, wait: float = 120.0) -> int:
    """Start the tracking server in its own process group; returns its pid once /health answers."""
    if healthy(s.mlflow_url):
        raise ServiceError(f"something already answers at {s.mlflow_url}: stop it or choose --mlflow-port")
    art = s.root / "artifacts"
    art.mkdir(parents=True, exist_ok=True)
    exe = Path(sys.executable).with_name("mlflow")
    cmd = [str(exe) if exe.is_file() else "mlflow", "server", "--backend-store-uri", s.postgres_url("mlflow"),
           "--serve-artifacts", "--artifacts-destination", str(art.resolve()), "--host", s.host,
           "--port", str(s.mlflow_port), "--workers", "2"]
    if s.host not in ("127.0.0.1", "localhost"):
        cmd += ["--allowed-hosts", "*"]
    log = open(s.root / "mlflow.log", "ab")
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    t0 = time.time()
    while time.time() - t0 < wait:
        if proc.poll() is not None:
            raise ServiceError(f"the MLflow server exited with {proc.returncode}; see {s.root / 'mlflow.log'}")
        if healthy(s.mlflow_url):
            return proc.pid
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGTERM)
    raise ServiceError(f"the MLflow server did not answer within {wait:.0f} s; see {s.root / 'mlflow.log'}")


def stop_mlflow(pid: int, grace: float = 20.0) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    t0 = time.time()
    while time.time() - t0 < grace:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def start(s: Services) -> dict:
    """Start both services (PostgreSQL first); returns the state written to ``services.json``."""
    s.root.mkdir(parents=True, exist_ok=True)
    start_postgres(s)
    try:
        pid = start_mlflow(s)
    except BaseException:
        stop_postgres(s)
        raise
    state = {"mlflow_pid": pid, "mlflow_url": s.mlflow_url, "studies_url": s.postgres_url("studies"),
             "mlflow_backend": s.postgres_url("mlflow"), "host": s.host, "pg_port": s.pg_port,
             "mlflow_port": s.mlflow_port, "artifacts": str((s.root / "artifacts").resolve())}
    s.state_file.write_text(json.dumps(state, indent=2))
    return state


def stop(root: Path) -> bool:
    """Stop what ``start`` started under ``root`` (the server, then the cluster); False if nothing ran."""
    state_file = root / "services.json"
    if not state_file.is_file():
        return False
    state = json.loads(state_file.read_text())
    stop_mlflow(int(state["mlflow_pid"]))
    stop_postgres(Services(root, state.get("host", "127.0.0.1"), int(state["pg_port"]), int(state["mlflow_port"])))
    state_file.unlink()
    return True


def announce(state: dict, root: Path) -> str:
    return "\n".join([
        f"MLflow tracking server: {state['mlflow_url']}   (artifacts served from {state['artifacts']})",
        f"Optuna storage:         {state['studies_url']}",
        "",
        "Point every worker at them, for example:",
        f"  python -m bench.ablate --tracking-uri {state['mlflow_url']}",
        f"  python -m studies run tune --storage {state['studies_url']} --tracking-uri {state['mlflow_url']}",
        f"  mlflow ui is the server itself: open {state['mlflow_url']}",
        f"Stop with Ctrl-C here, or: python -m bench.services stop --dir {root}",
    ])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.services", description=__doc__.split("\n\n")[0],
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=("start", "stop", "status"))
    p.add_argument("--dir", default="services", help="where the cluster, artifacts and logs live (default %(default)s)")
    p.add_argument("--host", default="127.0.0.1", help="interface both services listen on (default %(default)s)")
    p.add_argument("--pg-port", type=int, default=5432)
    p.add_argument("--mlflow-port", type=int, default=5000)
    p.add_argument("--detach", action="store_true", help="start and return; stop later with the stop action")
    a = p.parse_args(argv)
    root = Path(a.dir).resolve()
    if a.action == "stop":
        print("stopped" if stop(root) else f"nothing started under {root}")
        return 0
    if a.action == "status":
        state_file = root / "services.json"
        if not state_file.is_file():
            print(f"nothing started under {root}")
            return 1
        state = json.loads(state_file.read_text())
        up = healthy(state["mlflow_url"])
        print(f"MLflow {state['mlflow_url']}: {'up' if up else 'not answering'}; PostgreSQL {state['studies_url']}")
        return 0 if up else 1
    if (root / "services.json").is_file():
        print(f"error: services already started under {root} (python -m bench.services stop --dir {a.dir})", file=sys.stderr)
        return 2
    s = Services(root, a.host, a.pg_port, a.mlflow_port)
    try:
        state = start(s)
    except ServiceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(announce(state, root), flush=True)
    if a.detach:
        return 0
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    try:
        while not stopping and _still_running(state):
            time.sleep(1.0)
        if not stopping:
            print(f"the MLflow server stopped by itself; see {root / 'mlflow.log'}", file=sys.stderr)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not leave half the services running
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("\nstopping the MLflow server and PostgreSQL ...", flush=True)
        stop(root)
        print("stopped", flush=True)
    return 0


def _still_running(state: dict) -> bool:
    try:
        os.killpg(int(state["mlflow_pid"]), 0)
        return True
    except ProcessLookupError:
        return False


if __name__ == "__main__":
    raise SystemExit(main())
