"""`make demo-containers`: docker/compose.yaml's store run for real, in podman containers.

PostgreSQL, the one-off `setup`, HQ and terminals t1-t3 run as compose.yaml describes them (their
images, commands, environment, user and volumes are read from it), built from docker/ with podman.
A sale is rung at every counter; every terminal and HQ must then hold every op; t3's container is
killed (SIGKILL) while the others sell on, started again, and must catch up; `meshpos verify`
runs at every terminal. What was made (pod, containers, volumes) is removed at the end, also on
failure, Ctrl-C or SIGTERM; the images stay as the build cache.

Differences from `docker compose up`, all forced by the machines this project runs on:
- No registry is reachable: the base image is Debian bookworm made locally with mmdebstrap
  (`--base` picks another, e.g. python:3.11-slim), and PostgreSQL is Dockerfile.postgres
  (Debian's postgresql-15, same POSTGRES_* variables) instead of postgres:15.
- One pod, whose network namespace has only a loopback interface: no traffic leaves the pod and
  no container address is a private-range one. compose.yaml's host names point at loopback
  addresses (postgres and hq 127.0.0.1, t1-t3 127.0.0.2-4), and each terminal daemon listens on
  its own address, so all three keep compose.yaml's port 7700.
- Podman needs docker/podman/containers.conf here (runc, cgroupfs, no default ulimits), builds
  with the host's network and CA bundle, and runs no healthcheck timers (there is no systemd):
  this script runs each image's HEALTHCHECK itself (`podman healthcheck run`) and waits for it.

    python docker/podman_store.py [run] [--base IMAGE] [--sales N] [--summary FILE]
    python docker/podman_store.py setup   # install podman, runc, mmdebstrap; make the base image
    python docker/podman_store.py check   # exit 3 with the reason when podman cannot run here
    python docker/podman_store.py clean   # remove what runs of this script that died left behind
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from meshpos.demo.mesh import run_demo
from meshpos.demo.processes import DemoFailed, wait_for
from meshpos.demo.store import say

REPO = Path(__file__).resolve().parent.parent
DOCKER = REPO / "docker"
COMPOSE = DOCKER / "compose.yaml"
CONTAINERS_CONF = DOCKER / "podman" / "containers.conf"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
LOCAL_BASE = "localhost/debian-py:bookworm"
PACKAGES = ("podman", "runc", "mmdebstrap")
LABEL = "meshpos.demo-containers"  # its value is the pid of the run that made the thing
UNAVAILABLE = 3  # exit code of `check` and `setup` when podman cannot run here
TERMINALS = {"t1": "127.0.0.2", "t2": "127.0.0.3", "t3": "127.0.0.4"}
LOOPBACK_HOSTS = {"postgres": "127.0.0.1", "hq": "127.0.0.1", **TERMINALS}
POSTGRES_IMAGE = "localhost/meshpos-postgres"
SKUS = ("TSH-NAV-M", "JNS-BLA-L", "TSH-NAV-S")
WAIT_S = 180.0
SYSTEMD_NOISE = "unable to get systemd connection"  # podman's healthcheck timers; see above


class Unavailable(Exception):
    """Podman cannot run containers on this machine; the message says why."""


def podman_env() -> dict[str, str]:
    return {"CONTAINERS_CONF": str(CONTAINERS_CONF), **os.environ}


def podman(*args: str, timeout: float = 120, check: bool = True) -> str:
    """Run `podman ARGS`; returns stdout, or raises DemoFailed with podman's own error."""
    try:
        proc = subprocess.run(
            ["podman", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=podman_env(),
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise DemoFailed(f"`podman {' '.join(args)}` took over {timeout:.0f} s") from None
    if check and proc.returncode != 0:
        said = "\n".join(
            line for line in (proc.stderr or proc.stdout).splitlines() if SYSTEMD_NOISE not in line
        )
        raise DemoFailed(f"`podman {' '.join(args)}` failed ({proc.returncode}): {said[-3000:]}")
    return proc.stdout


# -- the machine: podman, its settings, the base image ------------------------------------------


def image_exists(image: str) -> bool:
    proc = subprocess.run(["podman", "image", "exists", image], env=podman_env(), check=False)
    return proc.returncode == 0


def check(base: str) -> None:
    """Raise Unavailable unless podman runs here and the base image exists or can be made."""
    if shutil.which("podman") is None:
        raise Unavailable("podman is not installed (`python docker/podman_store.py setup`)")
    info = subprocess.run(
        ["podman", "info", "--format", "{{.Host.OCIRuntime.Name}}"],
        capture_output=True, text=True, env=podman_env(), check=False, timeout=60,
    )  # fmt: skip
    if info.returncode != 0:
        raise Unavailable(f"`podman info` fails: {info.stderr.strip()[-500:]}")
    if base == LOCAL_BASE and not image_exists(base) and shutil.which("mmdebstrap") is None:
        raise Unavailable(f"no {base} image and no mmdebstrap to make it")


def setup(base: str) -> None:
    """Install what is missing of podman, runc and mmdebstrap (Debian's packages, as root), then
    make the local Debian base image if it is the one asked for and not there yet."""
    missing = [p for p in PACKAGES if shutil.which(p) is None]
    if missing:
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            raise Unavailable(f"{', '.join(missing)} missing, and apt-get as root is not at hand")
        say(f"install {', '.join(missing)} (Debian's packages)")
        apt_env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *PACKAGES]):
            if subprocess.run(cmd, env=apt_env, check=False, timeout=900).returncode != 0:
                raise Unavailable(f"`{' '.join(cmd)}` failed")
    check(base)
    if base == LOCAL_BASE and not image_exists(base):
        say(f"base image {base}: Debian bookworm with Python 3.11 (mmdebstrap, then podman import)")
        t0 = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="meshpos-base-") as tmp:
            tar = Path(tmp) / "base.tar"
            made = subprocess.run(
                ["mmdebstrap", "--quiet", "--variant=minbase",
                 "--include=python3,python3-venv,ca-certificates", "bookworm", str(tar)],
                check=False, timeout=900,
            )  # fmt: skip
            if made.returncode != 0:
                raise Unavailable("mmdebstrap could not make the Debian base image")
            podman("import", str(tar), base, timeout=300)
        print(f"    made in {time.monotonic() - t0:.1f} s", flush=True)


# -- images -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Build:
    image: str
    dockerfile: str


def builds(compose: dict[str, Any]) -> list[Build]:
    """compose.yaml's images and their Dockerfiles, plus PostgreSQL's stand-in."""
    found: dict[str, Build] = {}
    for service in compose["services"].values():
        if "build" in service:
            image = f"localhost/{service['image']}"
            found[image] = Build(image, service["build"]["dockerfile"])
    found[POSTGRES_IMAGE] = Build(POSTGRES_IMAGE, "docker/Dockerfile.postgres")
    return list(found.values())


def build_all(compose: dict[str, Any], base: str) -> dict[str, dict[str, float]]:
    """Build every image (layers cached between runs); returns each one's build time and size."""
    figures = {}
    for b in builds(compose):
        say(f"build {b.image} from {b.dockerfile} on {base}")
        t0 = time.monotonic()
        podman(
            "build", "--format", "docker", "--network", "host",
            "--volume", f"{CA_BUNDLE}:{CA_BUNDLE}:ro",
            "--build-arg", f"BASE={base}",
            "--ignorefile", str(DOCKER / "build.ignore"),
            "--file", str(REPO / b.dockerfile), "--tag", b.image, str(REPO),
            timeout=1200,
        )  # fmt: skip
        took = round(time.monotonic() - t0, 1)
        size = int(podman("image", "inspect", "--format", "{{.Size}}", b.image).strip())
        figures[b.image] = {"build_s": took, "mb": round(size / 1e6)}
        print(f"    built in {took} s; {size / 1e6:.0f} MB", flush=True)
    return figures


# -- the pod ------------------------------------------------------------------------------------


@dataclass
class Pod:
    """One run's pod, containers and volumes, all labelled with this process's pid."""

    name: str
    compose: dict[str, Any]
    hosts_file: Path
    volumes: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{LABEL}={os.getpid()}"

    def create(self) -> None:
        self.hosts_file.write_text(
            "".join(f"{addr}\t{name}\n" for name, addr in {"localhost": "127.0.0.1",
                                                            **LOOPBACK_HOSTS}.items())
        )  # fmt: skip
        for volume in self.compose.get("volumes", {}):
            self.volumes[volume] = f"{self.name}-{volume}"
            podman("volume", "create", "--label", self.label, self.volumes[volume])
        podman("pod", "create", "--name", self.name, "--label", self.label, "--network", "none")

    def container(self, service: str) -> str:
        return f"{self.name}-{service}"

    def run_args(self, service: str) -> list[str]:
        """`podman run` options for a compose service: its environment, user and volumes, in
        this pod, with the loopback host names."""
        spec = self.compose["services"][service]
        args = ["--pod", self.name, "--name", self.container(service), "--label", self.label,
                "--volume", f"{self.hosts_file}:/etc/hosts:ro"]  # fmt: skip
        for key, value in (spec.get("environment") or {}).items():
            args += ["--env", f"{key}={value}"]
        if "user" in spec:
            args += ["--user", str(spec["user"])]
        for mount in spec.get("volumes", []):
            volume, _, target = mount.partition(":")
            args += ["--volume", f"{self.volumes[volume]}:{target}"]
        return args

    def image(self, service: str) -> str:
        image = str(self.compose["services"][service]["image"])
        return POSTGRES_IMAGE if image.startswith("postgres:") else f"localhost/{image}"

    def start(self, service: str, command: Sequence[str] | None = None) -> None:
        spec = self.compose["services"][service]
        cmd = list(command if command is not None else spec.get("command") or [])
        podman("run", "--detach", *self.run_args(service), self.image(service), *cmd)

    def run_once(self, service: str) -> str:
        spec = self.compose["services"][service]
        return podman("run", "--rm", *self.run_args(service), self.image(service),
                      *spec["command"], timeout=600)  # fmt: skip

    def exec(self, service: str, *args: str, timeout: float = 120) -> str:
        return podman("exec", self.container(service), *args, timeout=timeout)

    def healthy(self, service: str) -> bool:
        """Runs the image's own HEALTHCHECK once (no systemd timer runs it here)."""
        proc = subprocess.run(
            ["podman", "healthcheck", "run", self.container(service)],
            capture_output=True, text=True, env=podman_env(), check=False, timeout=60,
        )  # fmt: skip
        return proc.returncode == 0

    def wait_healthy(self, service: str) -> float:
        took = wait_for(lambda: self.healthy(service), f"{service} healthy", timeout=WAIT_S)
        print(f"    {service} healthy after {took:.1f} s", flush=True)
        return took

    def logs(self, service: str) -> str:
        return podman("logs", "--tail", "40", self.container(service), check=False)


def remove_labelled(only_dead: bool) -> list[str]:
    """Remove pods (with their containers) and volumes labelled by runs of this script; with
    `only_dead`, only those of runs whose process is gone. Returns what was removed."""
    removed = []
    for kind in ("pod", "volume"):
        listing = podman(kind, "ls", "--filter", f"label={LABEL}", "--format", "json", check=False)
        for item in json.loads(listing or "[]"):
            name = item.get("Name", "")
            owner = (item.get("Labels") or {}).get(LABEL, "")
            if only_dead and owner.isdigit() and Path(f"/proc/{owner}").exists():
                continue
            podman(kind, "rm", "--force", name, check=False, timeout=120)
            removed.append(f"{kind} {name}")
    return removed


@contextmanager
def pod(compose: dict[str, Any], work: Path) -> Iterator[Pod]:
    p = Pod(f"meshpos-store-{os.getpid()}", compose, work / "hosts")
    try:
        p.create()
        yield p
    finally:
        podman("pod", "rm", "--force", p.name, check=False, timeout=120)
        for volume in p.volumes.values():
            podman("volume", "rm", "--force", volume, check=False, timeout=60)
        print(f"    removed pod {p.name}, its containers and volumes", flush=True)


# -- the store ----------------------------------------------------------------------------------


def vv(p: Pod, service: str) -> dict[str, int] | None:
    try:
        out = p.exec(service, "meshpos", "sync", "vv", "--json", timeout=60)
    except DemoFailed:
        return None
    return {str(k): int(v) for k, v in json.loads(out).items()}


def hq_store(p: Pod) -> dict[str, Any]:
    rows = json.loads(p.exec("hq", "meshpos", "hq", "stores", "--json"))
    return next((r for r in rows if r["store"] == "DEMO"), {})


def store_converged(p: Pod, services: Sequence[str]) -> dict[str, int] | None:
    """The terminals' common version vector, once every one of `services` holds the same."""
    vvs = [vv(p, s) for s in services]
    first = vvs[0]
    return first if first is not None and all(v == first for v in vvs) else None


def all_converged(p: Pod, services: Sequence[str]) -> bool:
    common = store_converged(p, services)
    return common is not None and int(hq_store(p).get("ops", -1)) == sum(common.values())


def sell(p: Pod, services: Sequence[str], round_: int) -> int:
    """One sale at each of `services`; returns how many were rung."""
    for i, service in enumerate(services):
        sku = SKUS[(round_ + i) % len(SKUS)]
        sale = json.loads(p.exec(service, "meshpos", "sell", sku, "--json"))
        print(f"    {service}: sale {sale['receipt']}, {sku}, ₹{sale['total'] / 100:,.2f}")
    return len(services)


def run_store(p: Pod, sales: int) -> dict[str, Any]:
    result: dict[str, Any] = {}
    terminals = list(TERMINALS)
    say("postgres: start, wait for its healthcheck (pg_isready)")
    p.start("postgres")
    p.wait_healthy("postgres")
    say("setup: compose.yaml's one-off container (HQ on PostgreSQL, three enrolled terminals)")
    print("      " + p.run_once("setup").strip().replace("\n", "\n      "), flush=True)
    say("hq and t1-t3: start, wait for their healthchecks (/v1/health, `meshpos status`)")
    p.start("hq")
    p.wait_healthy("hq")
    for service, address in TERMINALS.items():
        p.start(service, ["meshpos", "node", "run", "--host", address, "--no-discovery"])
    for service in terminals:
        p.wait_healthy(service)
    users = {s: p.exec(s, "id", "-un").strip() for s in ("hq", *terminals)}
    print(f"    users: {users}")
    if any(user == "root" for user in users.values()):
        raise DemoFailed(f"a container runs as root: {users}")
    result["users"] = users
    result["catalogue_sync_s"] = wait_for(
        lambda: store_converged(p, terminals) is not None,
        "catalogue on every terminal",
        timeout=WAIT_S,
    )
    say(f"ring {sales} sale(s) at every counter")
    rung = sum(sell(p, terminals, i) for i in range(sales))
    result["hq_sync_s"] = wait_for(
        lambda: all_converged(p, terminals), "every terminal and HQ hold every sale", timeout=WAIT_S
    )
    row = hq_store(p)
    print(f"    HQ: {row['ops']} ops from {row['origins']} origins, {row['sales']} sales")
    if int(row["sales"]) != rung:
        raise DemoFailed(f"HQ counts {row['sales']} sales, the counters rang {rung}")
    say("t3: killed (SIGKILL); t1 and t2 sell on; t3 started again must catch up")
    podman("kill", p.container("t3"))
    rung += sum(sell(p, terminals[:2], i) for i in range(sales))
    t0 = time.monotonic()
    podman("start", p.container("t3"))
    p.wait_healthy("t3")
    wait_for(lambda: all_converged(p, terminals), "t3 and HQ caught up", timeout=WAIT_S)
    result["restart_catch_up_s"] = round(time.monotonic() - t0, 1)
    row = hq_store(p)
    if int(row["sales"]) != rung:
        raise DemoFailed(f"HQ counts {row['sales']} sales, the counters rang {rung}")
    print(f"    caught up {result['restart_catch_up_s']} s after the restart; HQ: {row['sales']}"
          f" sales, {row['ops']} ops")  # fmt: skip
    say("verify every terminal: chains, signatures, views")
    for service in terminals:
        print(f"    {service}: {p.exec(service, 'meshpos', 'verify').strip()}", flush=True)
    stock = {s: json.loads(p.exec(s, "meshpos", "stock", SKUS[0], "--json"))[0]["qty"]
             for s in terminals}  # fmt: skip
    print(f"    stock of {SKUS[0]}: {stock}")
    if len(set(stock.values())) != 1:
        raise DemoFailed(f"terminals disagree on stock: {stock}")
    result.update(sales=rung, hq_sales=int(row["sales"]), ops=int(row["ops"]))
    return result


def demo(work: Path, base: str, sales: int, summary: Path | None) -> int:
    t0 = time.monotonic()
    setup(base)
    removed = remove_labelled(only_dead=True)
    if removed:
        print(f"    removed leftovers of earlier runs: {', '.join(removed)}")
    compose = yaml.safe_load(COMPOSE.read_text())
    result: dict[str, Any] = {"base": base, "images": build_all(compose, base)}
    run_t0 = time.monotonic()
    with pod(compose, work) as p:
        try:
            result.update(run_store(p, sales))
        except DemoFailed:
            for service in ("postgres", "hq", *TERMINALS):
                print(f"--- {service} log\n{p.logs(service)}", file=sys.stderr)
            raise
    result["run_s"] = round(time.monotonic() - run_t0, 1)
    result["seconds"] = round(time.monotonic() - t0, 1)
    say(f"done in {result['seconds']} s: {json.dumps(result)}")
    if summary is not None:
        summary.write_text(json.dumps(result, indent=1))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python docker/podman_store.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("command", nargs="?", default="run",
                        choices=["run", "setup", "check", "clean"])  # fmt: skip
    parser.add_argument("--base", default=LOCAL_BASE, help=f"base image (default {LOCAL_BASE})")
    parser.add_argument("--sales", type=int, default=1, help="sales per counter per round")
    parser.add_argument("--summary", type=Path, help="write the run's figures here as JSON")
    args = parser.parse_args(argv)
    try:
        if args.command == "check":
            check(args.base)
            return 0
        if args.command == "setup":
            setup(args.base)
            return 0
        if args.command == "clean":
            print("\n".join(remove_labelled(only_dead=True)) or "nothing to remove")
            return 0
    except Unavailable as exc:
        print(f"podman cannot run here: {exc}", file=sys.stderr)
        return UNAVAILABLE
    with tempfile.TemporaryDirectory(prefix="meshpos-containers-") as work:
        try:
            return run_demo(
                lambda path: demo(path, args.base, args.sales, args.summary),
                [work], "meshpos-containers-", "containers",
            )  # fmt: skip
        except Unavailable as exc:
            print(f"podman cannot run here: {exc}", file=sys.stderr)
            return UNAVAILABLE


if __name__ == "__main__":
    sys.exit(main())
