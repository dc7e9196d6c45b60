#!/usr/bin/env python3
"""Offline lint of the container deployment (no Docker engine needed).

Checks docker-compose.yml (its default services and its `cluster` profile's shape),
Dockerfile, .dockerignore, deploy/*.env,
prometheus/prometheus.yml and grafana/provisioning against each other and against the
Rust sources (the environment variables each binary reads, its default port), and that
the deployment stays safe by default (docs/operations.md, "Deployment hardening"): every
container read-only, without capabilities (documented exceptions only), without privilege
gain, with memory and process limits; admin ports on 127.0.0.1; no Prometheus lifecycle
or admin API; Grafana anonymous only in the dev profile; no curl in our images, whose
health checks are the binaries' own `healthcheck`. Images not pinned by digest are
warnings (pinning needs a registry: `docker buildx imagetools inspect <image>`).

    python3 scripts/lint-compose.py            # from anywhere; exit 1 on any error
    python3 scripts/lint-compose.py --offline  # skip `docker compose config` / promtool

Requires Python 3.11 and PyYAML (scripts/requirements-lint.txt).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

try:
    import yaml
except ImportError:  # pragma: no cover
    sys.exit("lint-compose: PyYAML is missing: pip install -r scripts/requirements-lint.txt")

# --- What the platform promises (docs/operations.md) ------------------------------------

# Our binaries: crate folder, Dockerfile target, port (None = no server).
BINARIES = {
    "ingestion": 3001,
    "analytics": 3002,
    "worker": 3003,
    "publisher": None,
}

# Variables whose built-in default is wrong inside compose (it points at 127.0.0.1), so the
# compose service MUST set them. (binary -> {var: compose service its URL must name})
REQUIRED_ENV = {
    "ingestion": {"NATS_URL": "nats"},
    "worker": {"NATS_URL": "nats", "DATABASE_URL": "postgres"},
    "analytics": {"DATABASE_URL": "postgres"},
    "publisher": {"EVENT_ENDPOINT": "ingestion"},
}

# What analytics reads, per its brief, used while analytics/src has no `env = "..."` yet.
ANALYTICS_FALLBACK_ENV = {
    "HOST", "PORT", "DATABASE_URL", "DATABASE_READ_URL", "DB_POOL_MAX", "DB_POOL_MIN",
    "ANALYTICS_API_KEY", "RUST_LOG", "LOG_FORMAT", "SHUTDOWN_TIMEOUT",
}

# Services that must stay scalable (`docker compose up --scale worker=3`).
SCALABLE = {"worker"}

# What a one-shot job built from one of our binaries must set instead of REQUIRED_ENV
# (binary -> {var: compose service its URL must name}): `worker migrate` needs only the
# owner's connection.
ONE_SHOT_REQUIRED_ENV = {
    "worker": {"MIGRATION_DATABASE_URL": "postgres"},
}


def is_one_shot(service: dict) -> bool:
    """A job that runs once and exits (`restart: "no"`, healthcheck disabled), such as
    the `migrate` deploy step: it has nothing to be healthy about, and whoever waits for
    it waits for `service_completed_successfully`."""
    hc = service.get("healthcheck")
    return (str(service.get("restart")) == "no" and isinstance(hc, dict)
            and bool(hc.get("disable")))

# The `cluster` profile (deploy/cluster.env; docs/operations.md, "Cluster"): the services it
# adds, each another member of a group the default services start. A member is judged
# as its group (capabilities, public ports).
CLUSTER_PROFILE = "cluster"
CLUSTER_ENV = "cluster.env"
CLUSTER_MEMBERS = {
    "nats-2": "nats", "nats-3": "nats",
    "ingestion-2": "ingestion",
    "worker-2": "worker",
    "postgres-standby": "postgres",
}
# What the cluster runs, per group, under deploy/cluster.env.
CLUSTER_SHAPE = {"nats": 3, "ingestion": 2, "worker": 2, "postgres": 2, "analytics": 1}


def group(name: str) -> str:
    """The group a service belongs to: itself, or the default service it is a member of."""
    return CLUSTER_MEMBERS.get(name, name)


def active(service: dict, compose_profiles: str) -> bool:
    """Whether a service runs with COMPOSE_PROFILES set to this value."""
    wanted = {p.strip() for p in compose_profiles.split(",") if p.strip()}
    profiles = service.get("profiles") or []
    return not profiles or bool(wanted & set(profiles))


# Ports that are not Prometheus text format (NATS monitoring is JSON).
NOT_PROMETHEUS = {("nats", 8222), ("nats", 4222)}

PLACEHOLDER = re.compile(r"change-?me", re.IGNORECASE)


@dataclass
class Report:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def error(self, where: str, msg: str) -> None:
        self.errors.append(f"{where}: {msg}")

    def warn(self, where: str, msg: str) -> None:
        self.warnings.append(f"{where}: {msg}")

    def note(self, msg: str) -> None:
        self.notes.append(msg)


# --- Rust sources: which variables each binary reads ------------------------------------

ENV_ATTR = re.compile(r'\benv\s*=\s*"([A-Z0-9_]+)"')
STRUCT_BLOCK = re.compile(r"pub struct (\w+)\s*\{(.*?)\n\}", re.DOTALL)
# `env = "PORT", default_value_t = 3001`, or the default a service gives the shared
# ServiceArgs' PORT: `mut_arg("port", default_port("3001"))`.
PORT_DEFAULT = re.compile(
    r'env\s*=\s*"PORT"\s*,\s*default_value(?:_t)?\s*=\s*"?(\d+)"?'
    r'|default_port\(\s*"?(\d+)"?\s*\)', re.DOTALL
)


def rust_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.rs")) if folder.is_dir() else []


def shared_arg_structs(root: Path) -> dict[str, set[str]]:
    """`clap::Args` structs of service-kit (e.g. StreamArgs) and the variables they read."""
    structs: dict[str, set[str]] = {}
    for path in rust_files(root / "service-kit" / "src"):
        for name, body in STRUCT_BLOCK.findall(path.read_text(encoding="utf-8")):
            names = set(ENV_ATTR.findall(body))
            if names:
                structs[name] = names
    return structs


def binary_env(root: Path, rep: Report) -> tuple[dict[str, set[str]], dict[str, int]]:
    shared = shared_arg_structs(root)
    reads: dict[str, set[str]] = {}
    ports: dict[str, int] = {}
    for binary in BINARIES:
        text = "\n".join(p.read_text(encoding="utf-8") for p in rust_files(root / binary / "src"))
        names = set(ENV_ATTR.findall(text))
        for struct, struct_names in shared.items():
            if re.search(rf"\b{struct}\b", text):
                names |= struct_names
        if not names and binary == "analytics":
            rep.note("analytics/src reads no `env = \"...\"` yet: using the variables of its brief")
            names = set(ANALYTICS_FALLBACK_ENV)
        if not names:
            rep.error(f"{binary}/src", "found no `env = \"NAME\"` attribute: cannot tell what it reads")
        reads[binary] = names
        m = PORT_DEFAULT.search(text)
        if m:
            ports[binary] = int(m.group(1) or m.group(2))
    return reads, ports


# --- compose -----------------------------------------------------------------------------

INTERP = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}")


def env_mapping(service: dict) -> dict[str, str | None]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        out: dict[str, str | None] = {}
        for item in env:
            key, sep, value = str(item).partition("=")
            out[key] = value if sep else None
        return out
    return {str(k): (None if v is None else str(v)) for k, v in env.items()}


def interpolate(value: str, env: dict[str, str]) -> str:
    """Resolves ${VAR}, ${VAR:-default}, ${VAR-default} as Compose would (one level)."""

    def sub(m: re.Match) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3) or ""
        val = env.get(name)
        if op in (":-",):
            return val if val else arg
        if op == "-":
            return val if val is not None else arg
        return val or ""

    return INTERP.sub(sub, value)


def url_port(url: str) -> tuple[str | None, int | None]:
    parts = urlsplit(url)
    try:
        return parts.hostname, parts.port
    except ValueError:
        return parts.hostname, None


def healthcheck_test(hc) -> str:
    test = hc.get("test") if isinstance(hc, dict) else None
    if isinstance(test, list):
        return " ".join(str(t) for t in test)
    return str(test or "")


def published_ports(service: dict) -> list[tuple[str | None, int]]:
    """(host part, container port) of each `ports:` entry."""
    out = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            out.append((str(entry.get("published")), int(entry.get("target"))))
            continue
        spec = str(entry).split("/")[0]
        pieces = spec.rsplit(":", 1)
        try:
            out.append((pieces[0] if len(pieces) == 2 else None, int(pieces[-1])))
        except ValueError:
            out.append((pieces[0] if len(pieces) == 2 else None, -1))
    return out


def lint_compose(root: Path, rep: Report, reads: dict[str, set[str]],
                 ports: dict[str, int], stages: dict[str, "Stage"]) -> dict:
    path = root / "docker-compose.yml"
    where = "docker-compose.yml"
    text = path.read_text(encoding="utf-8")
    doc = yaml.safe_load(text)
    if not isinstance(doc, dict) or not isinstance(doc.get("services"), dict):
        rep.error(where, "no `services:` mapping")
        return {}
    if "version" in doc:
        rep.error(where, "top-level `version:` is obsolete in the Compose spec: remove it")
    services: dict[str, dict] = doc["services"]
    volumes = set((doc.get("volumes") or {}).keys())
    profiled = {n for n, s in services.items() if s.get("profiles")}

    for name, svc in services.items():
        w = f"{where}: services.{name}"
        if not isinstance(svc, dict):
            rep.error(w, "is not a mapping")
            continue
        if "image" not in svc and "build" not in svc:
            rep.error(w, "has neither `image` nor `build`")

        # Healthcheck in compose (explicit, so `depends_on: service_healthy` is visible here).
        hc = svc.get("healthcheck")
        one_shot = is_one_shot(svc)
        if one_shot:
            if name in SCALABLE:
                rep.error(w, "is a one-shot job but must stay scalable")
        elif not isinstance(hc, dict) or hc.get("disable") or not hc.get("test"):
            rep.error(w, "has no healthcheck (`healthcheck.test`)")
        elif isinstance(hc.get("test"), list) and hc["test"][0] not in ("CMD", "CMD-SHELL", "NONE"):
            rep.error(w, "healthcheck.test list must start with CMD or CMD-SHELL")
        elif hc.get("test") == ["NONE"]:
            rep.error(w, "healthcheck.test is NONE")

        # depends_on: long form, service_healthy, existing service.
        deps = svc.get("depends_on") or {}
        if isinstance(deps, list):
            rep.error(w, f"depends_on uses the short (list) form {deps}: "
                         "use `name: {condition: service_healthy}`")
            deps = {d: {} for d in deps}
        for dep, spec in deps.items():
            if dep not in services:
                rep.error(w, f"depends_on names unknown service {dep!r}")
                continue
            cond = (spec or {}).get("condition") if isinstance(spec, dict) else None
            want = ("service_completed_successfully" if isinstance(services[dep], dict)
                    and is_one_shot(services[dep]) else "service_healthy")
            if cond != want:
                rep.error(w, f"depends_on.{dep} has condition {cond!r}, want {want}")
            if dep in profiled and name not in profiled:
                rep.error(w, f"depends on {dep!r}, which only runs under a profile")

        for key in ("links", "volumes_from"):
            for ref in svc.get(key) or []:
                target = str(ref).split(":")[0]
                if target not in services:
                    rep.error(w, f"{key} names unknown service {target!r}")
        nm = str(svc.get("network_mode") or "")
        if nm.startswith("service:") and nm[8:] not in services:
            rep.error(w, f"network_mode names unknown service {nm[8:]!r}")

        # Named volumes declared.
        for vol in svc.get("volumes") or []:
            src = vol.get("source") if isinstance(vol, dict) else str(vol).split(":")[0]
            if src and not src.startswith((".", "/", "~", "$")) and src not in volumes:
                rep.error(w, f"volume {src!r} is not declared under top-level `volumes:`")
            if src and src.startswith("./") and not (root / src).exists():
                rep.error(w, f"bind mount source {src} does not exist")

        if name in SCALABLE:
            if "container_name" in svc:
                rep.error(w, "has container_name: it could not be scaled")
            for host, _ in published_ports(svc):
                if host and re.search(r"\d+$", host):
                    rep.error(w, f"publishes a fixed host port ({host}): --scale would clash")

        # Our binaries.
        build = svc.get("build")
        target = build.get("target") if isinstance(build, dict) else None
        if isinstance(build, dict):
            dockerfile = build.get("dockerfile", "Dockerfile")
            if dockerfile != "Dockerfile":
                rep.note(f"services.{name} builds {dockerfile}: Dockerfile checks cover ./Dockerfile only")
            elif target and target not in stages:
                rep.error(w, f"build.target {target!r} is not a stage of Dockerfile")
        binary = target if target in BINARIES else None
        if binary is None and isinstance(svc.get("image"), str):
            base = svc["image"].split("/")[-1].split(":")[0]
            binary = base if base in BINARIES else None
        if binary:
            lint_binary_service(rep, w, name, svc, binary, services, reads, ports, one_shot)

    # Interpolation variables vs env profiles.
    lint_profiles(root, rep, text)
    return doc


def lint_binary_service(rep: Report, w: str, name: str, svc: dict, binary: str,
                        services: dict, reads: dict[str, set[str]], ports: dict[str, int],
                        one_shot: bool = False) -> None:
    env = env_mapping(svc)
    read = reads.get(binary, set())
    dev = {k: v for k, v in os_defaults().items()}
    required = ONE_SHOT_REQUIRED_ENV.get(binary, {}) if one_shot else REQUIRED_ENV[binary]
    for var, host_service in required.items():
        if read and var not in read:
            rep.warn(w, f"{var} is required by the lint but {binary} does not read it (renamed?)")
        value = env.get(var)
        if value is None:
            rep.error(w, f"{var} is not set (the default points at 127.0.0.1, wrong in a container)")
            continue
        resolved = interpolate(value, dev)
        for url in resolved.split(","):
            host, port = url_port(url.strip())
            if host != host_service:
                rep.error(w, f"{var}={value!r} should name the {host_service!r} service, names {host!r}")
            want = BINARIES.get(host_service)
            if want and port is not None and port != want:
                rep.error(w, f"{var}={value!r} uses port {port}, {host_service} listens on {want}")
    for var in ("DATABASE_URL", "DATABASE_READ_URL"):
        user = urlsplit(interpolate(env.get(var) or "", dev)).username
        if not one_shot and user == "postgres":
            rep.error(w, f"{var} logs in as the superuser: use the service's least-privileged "
                         "login (docs/operations.md, PostgreSQL roles and TLS)")
    for var, value in env.items():
        if read and var not in read:
            rep.warn(w, f"sets {var}, which {binary} does not read (typo?)")
        if value == "":
            rep.warn(w, f"sets {var} to the empty string (write `{var}:` to leave it unset)")
        if var == "HOST" and value not in (None, "0.0.0.0", "::"):
            rep.error(w, f"HOST={value!r}: must listen on all interfaces in a container")

    # Our images have no curl, wget or shell: a health check runs one of their binaries.
    hc = svc.get("healthcheck")
    test = hc.get("test") if isinstance(hc, dict) else None
    if test and not (isinstance(test, list) and len(test) >= 2 and test[0] == "CMD"
                     and str(test[1]).startswith("/usr/local/bin/")):
        rep.error(w, f"healthcheck {healthcheck_test(hc)!r} must run a binary of the image "
                     '(["CMD", "/usr/local/bin/..."]): the image has no curl, wget or shell')

    port = BINARIES[binary]
    if port is None or one_shot:
        return
    if ports.get(binary) not in (None, port):
        rep.error(w, f"{binary}'s built-in PORT default is {ports[binary]}, docs/operations.md says {port}")
    if "PORT" in env and interpolate(str(env["PORT"]), {}) != str(port):
        rep.error(w, f"PORT={env['PORT']!r}, docs/operations.md says {port}")
    want = ["CMD", f"/usr/local/bin/{binary}", "healthcheck"]
    if test and (not isinstance(test, list) or [str(t) for t in test[:3]] != want):
        rep.error(w, f"healthcheck should be {want} (the binary asks its own "
                     "/health/readiness on HOST and PORT)")
    for _, target_port in published_ports(svc):
        if target_port != port:
            rep.error(w, f"publishes container port {target_port}, {binary} listens on {port}")


_DEV_DEFAULTS: dict[str, str] | None = None


def os_defaults() -> dict[str, str]:
    return _DEV_DEFAULTS or {}


def parse_env_file(path: Path, rep: Report) -> dict[str, str]:
    out: dict[str, str] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[7:]
        key, sep, value = line.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key.strip()):
            rep.error(f"{path.name}:{n}", f"not a KEY=value line: {line!r}")
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        out[key.strip()] = value
    return out


def lint_profiles(root: Path, rep: Report, compose_text: str) -> None:
    global _DEV_DEFAULTS
    uses: dict[str, bool] = {}  # var -> has a default
    for m in INTERP.finditer(compose_text):
        name, op = m.group(1), m.group(2)
        uses[name] = uses.get(name, False) or (op in (":-", "-"))
    profiles = sorted((root / "deploy").glob("*.env"))
    if not profiles:
        rep.error("deploy/", "no *.env profiles")
    wanted = {"dev.env", "staging.env", "production.env"}
    missing = wanted - {p.name for p in profiles}
    if missing:
        rep.error("deploy/", f"missing profiles: {', '.join(sorted(missing))}")
    # Pass-through variables (`NAME:` with no value) are taken from the profile too.
    passthrough = set()
    doc = yaml.safe_load(compose_text) or {}
    for svc in (doc.get("services") or {}).values():
        passthrough |= {k for k, v in env_mapping(svc).items() if v is None}
    for path in profiles:
        where = f"deploy/{path.name}"
        values = parse_env_file(path, rep)
        if path.name == "dev.env":
            _DEV_DEFAULTS = values
        for var, has_default in uses.items():
            if not has_default and var not in values:
                rep.error(where, f"does not set {var}, which docker-compose.yml uses without a default")
        for var in values:
            if var.startswith("COMPOSE_"):
                continue
            if var not in uses and var not in passthrough:
                rep.warn(where, f"sets {var}, which docker-compose.yml never uses (typo?)")
        if path.name == "production.env":
            for var, value in values.items():
                if PLACEHOLDER.search(value):
                    rep.warn(where, f"{var} is still a placeholder: set a real secret before deploying")
            if values.get("LOG_FORMAT", "json") != "json":
                rep.warn(where, "LOG_FORMAT should be json in production")
            if "COMPOSE_PROFILES" in values and "demo" in values["COMPOSE_PROFILES"]:
                rep.error(where, "enables the demo publisher (COMPOSE_PROFILES=demo) in production")
        replicas = values.get("NATS_STREAM_REPLICAS", "1")
        if replicas != "1":
            running = values.get("COMPOSE_PROFILES", "")
            nats_count = sum(1 for svc in (doc.get("services") or {}).values()
                             if isinstance(svc, dict) and str(svc.get("image", "")).startswith("nats:")
                             and active(svc, running))
            if nats_count < int(replicas or 1):
                rep.error(where, f"NATS_STREAM_REPLICAS={replicas} but compose runs {nats_count} "
                                 f"NATS server(s) with COMPOSE_PROFILES={running!r}")


# --- Hardening ---------------------------------------------------------------------------

# Capabilities a service may add back after `cap_drop: [ALL]` (docker-compose.yml says why
# next to each): PostgreSQL's entrypoint starts as root to chown its directories, then
# switches to the `postgres` user.
CAP_EXCEPTIONS = {
    "postgres": {"CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID"},
}

# Services whose port may face outside, and the secrets that must then be set in the
# profile (the variable or its _FILE twin). `dev_exempt`: deploy/dev.env (and running
# without a profile) may leave it open, as documented in docs/operations.md, "Secrets".
PUBLIC_SERVICES = {
    "ingestion": {"secrets": ("WEBHOOK_SECRET", "WEBHOOK_SECRET_FILE"), "dev_exempt": True},
    "analytics": {"secrets": ("ANALYTICS_API_KEY", "ANALYTICS_API_KEY_FILE"), "dev_exempt": False},
}

# The one profile where convenience wins (anonymous Grafana, open ingestion).
DEV_PROFILE = "dev.env"

PROMETHEUS_ADMIN_FLAGS = ("--web.enable-lifecycle", "--web.enable-admin-api")

LOOPBACK = re.compile(r"^(127\.\d+\.\d+\.\d+|::1|\[::1\])$")

_PINNED_WARNED: set[str] = set()


def check_pinned(rep: Report, where: str, image: str) -> None:
    """Warns (once per image) about an image that is a tag, not a digest."""
    if "@sha256:" in image or image in _PINNED_WARNED:
        return
    _PINNED_WARNED.add(image)
    rep.warn(where, f"image {image} is not pinned by digest: run `docker buildx imagetools "
                    f"inspect {image}` and write {image}@sha256:<digest>")


def bind_addresses(service: dict, env: dict[str, str]) -> list[tuple[str | None, str]]:
    """(host address or None for every interface, the entry) of each `ports:` entry, with
    ${VAR} resolved from `env`."""
    out: list[tuple[str | None, str]] = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            ip = entry.get("host_ip")
            out.append((interpolate(str(ip), env) if ip else None, str(entry)))
            continue
        spec = interpolate(str(entry), env).split("/")[0]
        if spec.startswith("["):  # [::1]:9090:9090
            ip, _, _ = spec[1:].partition("]")
            out.append((ip, str(entry)))
            continue
        pieces = spec.split(":")
        out.append((pieces[0] if len(pieces) == 3 else None, str(entry)))
    return out


def truthy(value: str | None) -> bool:
    return str(value or "").strip().lower() in ("true", "1", "yes", "on")


def lint_hardening(root: Path, rep: Report, compose: dict) -> None:
    services = (compose.get("services") or {}) if compose else {}
    profiles = {p.name: parse_env_file(p, Report()) for p in sorted((root / "deploy").glob("*.env"))}
    # Running without --env-file uses the ${VAR:-default} defaults: judged like dev.
    resolutions = [("(no profile)", {}), *profiles.items()]
    for name, svc in services.items():
        if not isinstance(svc, dict):
            continue
        w = f"docker-compose.yml: services.{name}"
        if svc.get("read_only") is not True:
            rep.error(w, "has no `read_only: true` (a tmpfs where it must write)")
        drops = {str(c).upper().removeprefix("CAP_") for c in svc.get("cap_drop") or []}
        if "ALL" not in drops:
            rep.error(w, "does not drop every capability (`cap_drop: [ALL]`)")
        added = {str(c).upper().removeprefix("CAP_") for c in svc.get("cap_add") or []}
        extra = added - CAP_EXCEPTIONS.get(group(name), set())
        if extra:
            rep.error(w, f"adds capabilities {sorted(extra)} beyond its documented exceptions "
                         "(CAP_EXCEPTIONS in scripts/lint-compose.py)")
        opts = [str(o).replace("=", ":").replace(" ", "") for o in svc.get("security_opt") or []]
        if not any(o in ("no-new-privileges", "no-new-privileges:true") for o in opts):
            rep.error(w, 'lacks `security_opt: ["no-new-privileges:true"]`')
        if svc.get("privileged"):
            rep.error(w, "is privileged")
        if str(svc.get("network_mode") or "") == "host":
            rep.error(w, "uses the host's network")
        limits = ((svc.get("deploy") or {}).get("resources") or {}).get("limits") or {}
        if not (svc.get("mem_limit") or limits.get("memory")):
            rep.error(w, "has no memory limit (`mem_limit`)")
        if not (svc.get("pids_limit") or limits.get("pids")):
            rep.error(w, "has no process limit (`pids_limit`)")
        if isinstance(svc.get("image"), str) and "build" not in svc:
            check_pinned(rep, w, svc["image"])

        # Published ports: 127.0.0.1 unless the service faces outside with its secrets set.
        public = PUBLIC_SERVICES.get(group(name))
        exposed: dict[str, list[str]] = {}  # entry -> profiles where it is refused
        for profile, env in resolutions:
            dev = profile in ("(no profile)", DEV_PROFILE)
            for ip, entry in bind_addresses(svc, env):
                if ip is not None and LOOPBACK.match(ip):
                    continue
                if public is None or (not (dev and public["dev_exempt"])
                                      and not any(env.get(v) for v in public["secrets"])):
                    exposed.setdefault(entry, []).append(f"{profile} ({ip or 'every interface'})")
        for entry, where_open in exposed.items():
            if public is None:
                rep.error(w, f"publishes {entry!r} beyond 127.0.0.1 with {', '.join(where_open)}: "
                             'admin and observability ports go on "127.0.0.1:HOST:CONTAINER"')
            else:
                rep.error(w, f"publishes {entry!r} beyond 127.0.0.1 with {', '.join(where_open)}, "
                             f"without {' or '.join(public['secrets'])} in that profile: keep it "
                             "on 127.0.0.1 or set them")

        # Prometheus: no HTTP endpoint that stops it or deletes data.
        command = svc.get("command") or []
        words = command.split() if isinstance(command, str) else [str(c) for c in command]
        for flag in PROMETHEUS_ADMIN_FLAGS:
            if any(word.split("=")[0] == flag for word in words):
                rep.error(w, f"runs with {flag}: anyone reaching the port could stop it or delete data")

        # Grafana: anonymous viewers only in the dev profile.
        anonymous = env_mapping(svc).get("GF_AUTH_ANONYMOUS_ENABLED")
        if anonymous is not None:
            for profile, env in resolutions:
                if profile != DEV_PROFILE and truthy(interpolate(anonymous, env)):
                    rep.error(w, f"GF_AUTH_ANONYMOUS_ENABLED is true with {profile}: anonymous "
                                 f"viewers are for {DEV_PROFILE} only")


# --- NATS authentication -----------------------------------------------------------------

# What NATS reads back as configuration text from `$NATS_PASSWORD` and a URL carries
# unescaped (deploy/nats.conf): a number or `true` would not even be a string.
NATS_LOGIN_VALUE = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
NATS_NOT_STRINGS = {"true", "false", "yes", "no", "on", "off"}


def mounted_file(root: Path, service: dict, container_path: str) -> Path | None:
    """The repository file a service mounts at container_path, if any."""
    for vol in service.get("volumes") or []:
        parts = str(vol).split(":")
        if len(parts) >= 2 and parts[1] == container_path and parts[0].startswith("./"):
            return root / parts[0]
    return None


def nats_config_has_login(root: Path, service: dict, config: str, depth: int = 0) -> bool:
    """Whether the NATS configuration at `config` in the container, or a file it
    includes, has an authorization or accounts block."""
    path = mounted_file(root, service, config)
    if path is None or not path.is_file() or depth > 3:
        return False
    text = path.read_text(encoding="utf-8")
    if re.search(r"^\s*(authorization|accounts)\b", text, re.M):
        return True
    folder = config.rsplit("/", 1)[0]
    for inc in re.findall(r"^\s*include\s+['\"]?([^'\"\s]+)", text, re.M):
        target = inc if inc.startswith("/") else f"{folder}/{inc.removeprefix('./')}"
        if nats_config_has_login(root, service, target, depth + 1):
            return True
    return False


def lint_nats_auth(root: Path, rep: Report, compose: dict) -> None:
    """NATS requires a login in compose, and ingestion and the worker give one."""
    services = (compose.get("services") or {}) if compose else {}
    profiles = {p.name: parse_env_file(p, Report()) for p in sorted((root / "deploy").glob("*.env"))}
    for name, nats in services.items():
        if not isinstance(nats, dict) or group(name) != "nats":
            continue
        where = f"docker-compose.yml: services.{name}"
        command = nats.get("command") or []
        words = command.split() if isinstance(command, str) else [str(w) for w in command]
        config = next((words[i + 1] for i, w in enumerate(words[:-1]) if w in ("-c", "--config")), None)
        if config is None:
            rep.error(where, "runs without a configuration file (-c): NATS would ask for no login")
            continue
        for profile, env in [("(no profile)", {}), *profiles.items()]:
            if not active(nats, env.get("COMPOSE_PROFILES", "")):
                continue
            resolved = interpolate(config, env)
            path = mounted_file(root, nats, resolved)
            if path is None or not path.is_file():
                rep.error(where, f"its configuration {resolved} ({profile}) is not a file "
                                 "mounted from this repository")
            elif not nats_config_has_login(root, nats, resolved):
                rep.error(where, f"{path.relative_to(root)} ({profile}) has no authorization "
                                 "or accounts block, nor includes one")
    for name, svc in services.items():
        if not isinstance(svc, dict):
            continue
        env = env_mapping(svc)
        url = env.get("NATS_URL")
        if url is None or name == "nats":
            continue
        other_login = any(env.get(v) is not None for v in ("NATS_CREDS_FILE", "NATS_NKEY_SEED_FILE"))
        if "@" not in url and not other_login:
            rep.error(f"docker-compose.yml: services.{name}",
                      "NATS_URL carries no user:password@ (and no NATS_CREDS_FILE or NATS_NKEY_SEED_FILE)")
    for path in sorted((root / "deploy").glob("*.env")):
        values = parse_env_file(path, Report())
        for var in ("NATS_USER", "NATS_PASSWORD"):
            value = values.get(var)
            if value is None:
                continue
            if not NATS_LOGIN_VALUE.fullmatch(value) or value.lower() in NATS_NOT_STRINGS:
                rep.error(f"deploy/{path.name}", f"{var} must be letters, digits, - and _, "
                                                 "starting with a letter (deploy/nats.conf)")


# --- The cluster profile ----------------------------------------------------------------

def lint_cluster(root: Path, rep: Report, compose: dict) -> None:
    """The `cluster` profile has the shape of scripts/run-local.sh --cluster under
    deploy/cluster.env: three NATS nodes routed to each other with R3 streams, two
    ingestion replicas and two workers that know every node, a PostgreSQL primary that
    prepares replication and a streaming standby of it, analytics reading the standby;
    every service with a healthcheck."""
    services = (compose.get("services") or {}) if compose else {}
    where = "docker-compose.yml (cluster profile)"
    if not any(CLUSTER_PROFILE in (svc.get("profiles") or []) for svc in services.values()
               if isinstance(svc, dict)):
        return
    env_path = root / "deploy" / CLUSTER_ENV
    if not env_path.is_file():
        rep.error(where, f"deploy/{CLUSTER_ENV} is missing: it enables the profile and its settings")
        return
    env = parse_env_file(env_path, Report())
    running = env.get("COMPOSE_PROFILES", "")
    if CLUSTER_PROFILE not in [p.strip() for p in running.split(",")]:
        rep.error(f"deploy/{CLUSTER_ENV}", f"COMPOSE_PROFILES={running!r} does not enable {CLUSTER_PROFILE!r}")
    for member in CLUSTER_MEMBERS:
        svc = services.get(member)
        if not isinstance(svc, dict):
            rep.error(where, f"has no service {member!r}")
        elif CLUSTER_PROFILE not in (svc.get("profiles") or []):
            rep.error(where, f"services.{member} is not in the {CLUSTER_PROFILE!r} profile only")
    up = {n: svc for n, svc in services.items() if isinstance(svc, dict) and active(svc, running)}
    for grp, want in CLUSTER_SHAPE.items():
        got = sorted(n for n in up if group(n) == grp)
        if len(got) != want:
            rep.error(where, f"runs {len(got)} {grp} ({', '.join(got) or 'none'}), the cluster has {want}")
        for n in got:
            hc = up[n].get("healthcheck")
            if not isinstance(hc, dict) or hc.get("disable") or not hc.get("test"):
                rep.error(where, f"services.{n} has no healthcheck")
    if env.get("NATS_STREAM_REPLICAS") != "3":
        rep.error(f"deploy/{CLUSTER_ENV}", "NATS_STREAM_REPLICAS must be 3 (R3 streams on three nodes)")
    lint_cluster_nats(root, rep, up, env)
    lint_cluster_clients(rep, up, env)
    lint_cluster_postgres(rep, up, env)


def lint_cluster_nats(root: Path, rep: Report, up: dict, env: dict[str, str]) -> None:
    """Every node runs a cluster configuration that routes to every node, with its own
    server name and store."""
    nodes = sorted(n for n in up if group(n) == "nats")
    names, stores = set(), set()
    for n in nodes:
        w = f"docker-compose.yml (cluster profile): services.{n}"
        svc = up[n]
        command = [interpolate(str(c), env) for c in svc.get("command") or []]
        config = next((command[i + 1] for i, c in enumerate(command[:-1]) if c in ("-c", "--config")), None)
        path = mounted_file(root, svc, config) if config else None
        if path is None or not path.is_file():
            rep.error(w, f"its configuration {config} is not a file mounted from this repository")
            continue
        text = path.read_text(encoding="utf-8")
        routes = set(re.findall(r"nats-route://([A-Za-z0-9_.-]+):6222", text))
        if not re.search(r"^\s*cluster\s*\{", text, re.M) or routes != set(nodes):
            rep.error(w, f"{path.relative_to(root)} must have a cluster block routing to every "
                         f"node on 6222 ({', '.join(nodes)}), routes to {sorted(routes)}")
        names.add(interpolate(str(env_mapping(svc).get("NATS_SERVER_NAME") or ""), env))
        stores |= {str(v).split(":")[0] for v in svc.get("volumes") or [] if str(v).endswith(":/data")}
    if len(names - {""}) != len(nodes):
        rep.error("docker-compose.yml (cluster profile)", "every NATS node needs its own NATS_SERVER_NAME")
    if len(stores) != len(nodes):
        rep.error("docker-compose.yml (cluster profile)", "every NATS node needs its own /data volume")


def lint_cluster_clients(rep: Report, up: dict, env: dict[str, str]) -> None:
    """Ingestion and workers know every node and ask for three replicas; analytics reads
    the standby."""
    nodes = {n for n in up if group(n) == "nats"}
    for n, svc in up.items():
        if group(n) not in ("ingestion", "worker"):
            continue
        w = f"docker-compose.yml (cluster profile): services.{n}"
        vars_ = env_mapping(svc)
        hosts = {url_port(u.strip())[0] for u in interpolate(vars_.get("NATS_URL") or "", env).split(",")}
        if hosts != nodes:
            rep.error(w, f"NATS_URL names {sorted(h or '?' for h in hosts)}, not every node {sorted(nodes)}")
        if interpolate(vars_.get("NATS_STREAM_REPLICAS") or "1", env) != "3":
            rep.error(w, "NATS_STREAM_REPLICAS does not resolve to 3")
    for n, svc in up.items():
        if group(n) != "analytics":
            continue
        read = interpolate(env_mapping(svc).get("DATABASE_READ_URL") or "", env)
        host = url_port(read)[0]
        if host != "postgres-standby":
            rep.error(f"docker-compose.yml (cluster profile): services.{n}",
                      f"DATABASE_READ_URL names {host!r}: analytics reads the standby (postgres-standby)")


def lint_cluster_postgres(rep: Report, up: dict, env: dict[str, str]) -> None:
    """The primary prepares replication (deploy/postgres/replication.sh) and the standby
    is made from it (deploy/postgres/standby.sh), with the same replication login."""
    w = "docker-compose.yml (cluster profile)"
    primary, standby = up.get("postgres"), up.get("postgres-standby")
    if not isinstance(primary, dict) or not isinstance(standby, dict):
        return
    if not any("deploy/postgres/replication.sh:/docker-entrypoint-initdb.d/" in str(v)
               for v in primary.get("volumes") or []):
        rep.error(w, "services.postgres does not run deploy/postgres/replication.sh at initialisation")
    for var in ("REPLICATION_USER", "REPLICATION_PASSWORD"):
        if not env.get(var):
            rep.error(f"deploy/{CLUSTER_ENV}", f"does not set {var} (the standby's login)")
        for n, svc in (("postgres", primary), ("postgres-standby", standby)):
            if var not in env_mapping(svc):
                rep.error(w, f"services.{n} does not get {var}")
    entry = [str(e) for e in standby.get("entrypoint") or []]
    mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in standby.get("volumes") or []
              if ":" in str(v)}
    script = next((e for e in entry if e.endswith("standby.sh")), None)
    folder = script.rsplit("/", 1)[0] if script else None
    if script is None or mounts.get(folder) != "./deploy/postgres":
        rep.error(w, "services.postgres-standby must start with deploy/postgres/standby.sh, mounted")
    if env_mapping(standby).get("PRIMARY_HOST") != "postgres":
        rep.error(w, "services.postgres-standby: PRIMARY_HOST must name the postgres service")
    dep = (standby.get("depends_on") or {}).get("postgres") if isinstance(standby.get("depends_on"), dict) else None
    if not isinstance(dep, dict) or dep.get("condition") != "service_healthy":
        rep.error(w, "services.postgres-standby must wait for postgres to be healthy")
    if "pg_isready" not in healthcheck_test(standby.get("healthcheck")):
        rep.error(w, "services.postgres-standby's healthcheck should be pg_isready")


# --- Dockerfile --------------------------------------------------------------------------

@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str, int]] = field(default_factory=list)


def parse_dockerfile(path: Path) -> list[Stage]:
    lines = path.read_text(encoding="utf-8").splitlines()
    logical: list[tuple[str, int]] = []
    buf, start = "", 0
    for n, raw in enumerate(lines, 1):
        stripped = raw.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue  # comment line inside a continuation
        if not buf:
            start = n
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        logical.append((buf, start))
        buf = ""
    if buf:
        logical.append((buf, start))
    stages: list[Stage] = []
    for text, n in logical:
        instr, _, args = text.partition(" ")
        instr = instr.upper()
        if instr == "FROM":
            words = args.split()
            words = [w for w in words if not w.startswith("--")]
            base = words[0] if words else ""
            name = words[2] if len(words) >= 3 and words[1].lower() == "as" else str(len(stages))
            stages.append(Stage(name=name, base=base))
        elif stages:
            stages[-1].instructions.append((instr, args.strip(), n))
    return stages


def stage_chain(stages: list[Stage], stage: Stage) -> list[Stage]:
    """A stage and the stages it is built `FROM`, nearest first."""
    by_name = {s.name: s for s in stages}
    chain: list[Stage] = []
    while stage and stage not in chain:
        chain.append(stage)
        stage = by_name.get(stage.base)
    return chain


def healthcheck_exec_form(args: str) -> list[str] | None:
    """The command of `HEALTHCHECK [options] CMD ["a", "b"]`, or None for the shell form."""
    m = re.search(r"\bCMD\s+(\[.*\])\s*$", args)
    if not m:
        return None
    try:
        command = json.loads(m.group(1))
    except json.JSONDecodeError:
        return None
    return [str(c) for c in command] if isinstance(command, list) and command else None


def global_args(path: Path) -> dict[str, str]:
    """Defaults of the `ARG NAME=value` lines before the first FROM (base image choices)."""
    out: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        words = line.strip().split(None, 1)
        if not words or words[0].startswith("#"):
            continue
        if words[0].upper() == "FROM":
            break
        if words[0].upper() == "ARG" and len(words) == 2 and "=" in words[1]:
            name, _, value = words[1].partition("=")
            out[name.strip()] = value.strip().strip("\"'")
    return out


def stage_lookup(stages: list[Stage], stage: Stage, instr: str) -> tuple[str, int] | None:
    """The last `instr` of a stage, following `FROM <other stage>` parents."""
    by_name = {s.name: s for s in stages}
    seen = set()
    while stage and stage.name not in seen:
        seen.add(stage.name)
        found = [(a, n) for i, a, n in stage.instructions if i == instr]
        if found:
            return found[-1]
        stage = by_name.get(stage.base)
    return None


def dockerignore_excludes(root: Path, rel: str) -> bool:
    path = root / ".dockerignore"
    if not path.exists():
        return False
    excluded = False
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:] if negate else line
        pattern = pattern.strip("/")
        candidates = [rel]
        parts = rel.split("/")
        candidates += ["/".join(parts[:i]) for i in range(1, len(parts))]
        hit = any(fnmatch.fnmatch(c, pattern) or
                  (pattern.startswith("**/") and fnmatch.fnmatch(c.split("/")[-1], pattern[3:]))
                  for c in candidates)
        if hit:
            excluded = not negate
    return excluded


def workspace_members(root: Path) -> list[str]:
    try:
        import tomllib
        data = tomllib.loads((root / "Cargo.toml").read_text(encoding="utf-8"))
        return list(data.get("workspace", {}).get("members", []))
    except Exception:  # noqa: BLE001
        return list(BINARIES)


def lint_dockerfile(root: Path, rep: Report) -> dict[str, Stage]:
    path = root / "Dockerfile"
    where = "Dockerfile"
    if not path.exists():
        rep.error(where, "missing")
        return {}
    stages = parse_dockerfile(path)
    by_name = {s.name: s for s in stages}

    # Base images pinned by digest (a tag can be moved to other content under us).
    args = global_args(path)
    for s in stages:
        base = re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: args.get(m.group(1), m.group(0)), s.base)
        if base in by_name or base == "scratch":
            continue
        check_pinned(rep, f"{where}: stage {s.name}", base)

    builds = [s for s in stages
              if any(i == "RUN" and "cargo build" in a for i, a, _ in s.instructions)]
    if not builds:
        rep.error(where, "no stage runs `cargo build`")
    for s in builds:
        w = f"{where}: stage {s.name}"
        run = " ".join(a for i, a, _ in s.instructions if i == "RUN" and "cargo build" in a)
        for flag in ("--release", "--locked"):
            if flag not in run:
                rep.error(w, f"cargo build lacks {flag}")
        if "type=cache" not in run:
            rep.warn(w, "cargo build has no cache mount (slow rebuilds)")
        copies = [a for i, a, _ in s.instructions if i in ("COPY", "ADD") and "--from" not in a]
        srcs = [c.split()[:-1] for c in copies]
        whole = any("." in src for src in srcs)
        sql = any(any(x.rstrip("/") in ("sql", "./sql") for x in src) for src in srcs)
        if not (sql or whole):
            rep.error(w, "does not copy sql/ (migrations are embedded with include_str!)")
        needed = ["sql", "Cargo.toml", "Cargo.lock", *workspace_members(root)]
        for rel in needed:
            if whole and dockerignore_excludes(root, rel):
                rep.error(".dockerignore", f"excludes {rel}, which the build stage needs")
        if not (root / ".dockerignore").exists():
            rep.warn(where, "no .dockerignore: target/ and .git would be sent as build context")
        elif not dockerignore_excludes(root, "target"):
            rep.warn(".dockerignore", "does not exclude target/")

    curl_lines: set[int] = set()
    for binary, port in BINARIES.items():
        stage = by_name.get(binary)
        w = f"{where}: stage {binary}"
        if stage is None:
            rep.error(where, f"no runtime stage named {binary!r} (FROM ... AS {binary})")
            continue
        user = stage_lookup(stages, stage, "USER")
        if user is None:
            rep.error(w, "has no USER (runs as root)")
        else:
            who = user[0].split(":")[0]
            if who in ("root", "0"):
                rep.error(w, f"USER {user[0]} is root")
        hc = stage_lookup(stages, stage, "HEALTHCHECK")
        if hc is None or hc[0].upper().startswith("NONE"):
            rep.error(w, "has no HEALTHCHECK")
        else:
            command = healthcheck_exec_form(hc[0])
            if command is None:
                rep.error(w, "HEALTHCHECK must use the exec form CMD [\"/usr/local/bin/...\", ...]: "
                             "the runtime image has no shell")
            elif port is not None and command[:2] != [f"/usr/local/bin/{binary}", "healthcheck"]:
                rep.error(w, f'HEALTHCHECK should be CMD ["/usr/local/bin/{binary}", "healthcheck"]')
            elif command and not command[0].startswith("/usr/local/bin/"):
                rep.error(w, f"HEALTHCHECK runs {command[0]}, not a binary of the image")
        for parent in stage_chain(stages, stage):
            for instr, args, n in parent.instructions:
                if (instr in ("RUN", "HEALTHCHECK") and re.search(r"\b(curl|wget)\b", args)
                        and n not in curl_lines):
                    curl_lines.add(n)
                    rep.error(f"{where}:{n}", f"stage {parent.name} uses curl or wget: the "
                                              "runtime images must not contain them")
        entry = stage_lookup(stages, stage, "ENTRYPOINT")
        if entry is None or f"/usr/local/bin/{binary}" not in entry[0]:
            rep.error(w, f'ENTRYPOINT should be ["/usr/local/bin/{binary}"]')
        elif not entry[0].startswith("["):
            rep.error(w, "ENTRYPOINT should use the exec (JSON) form so signals reach the binary")
        if port is not None:
            exposed = {e for i, a, _ in stage.instructions if i == "EXPOSE" for e in a.split()}
            if str(port) not in {e.split("/")[0] for e in exposed}:
                rep.error(w, f"does not EXPOSE {port}")
        if not any(i == "COPY" and "--from=" in a and binary in a for i, a, _ in stage.instructions):
            rep.error(w, f"does not copy the {binary} binary from the build stage")
    return by_name


# --- Prometheus and Grafana --------------------------------------------------------------

def lint_prometheus(root: Path, rep: Report, compose: dict) -> None:
    where = "prometheus/prometheus.yml"
    path = root / where
    if not path.exists():
        rep.error(where, "missing")
        return
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        rep.error(where, f"invalid YAML: {e}")
        return
    services = (compose.get("services") or {}) if compose else {}
    scraped: dict[str, set[int]] = {}
    for job in (doc or {}).get("scrape_configs") or []:
        jw = f"{where}: job {job.get('job_name')}"
        if not job.get("job_name"):
            rep.error(where, "a scrape config has no job_name")
        if job.get("metrics_path", "/metrics") != "/metrics":
            rep.error(jw, f"metrics_path {job['metrics_path']} (services serve /metrics)")
        targets: list[tuple[str, int | None]] = []
        for sc in job.get("static_configs") or []:
            for t in sc.get("targets") or []:
                host, _, port = str(t).rpartition(":")
                targets.append((host, int(port) if port.isdigit() else None))
        for dc in job.get("dns_sd_configs") or []:
            if any(str(n).startswith("tasks.") for n in dc.get("names") or []):
                rep.error(jw, "`tasks.<service>` names resolve only on Docker Swarm, not Compose")
            if dc.get("type", "SRV") != "SRV" and dc.get("port") is None:
                rep.error(jw, "dns_sd_configs of type A/AAAA need `port`")
            for n in dc.get("names") or []:
                targets.append((str(n), dc.get("port")))
        for host, port in targets:
            if (host, port) in NOT_PROMETHEUS:
                rep.error(jw, f"scrapes {host}:{port}, which is JSON, not Prometheus format")
            if services and host not in services and host not in ("localhost", "127.0.0.1"):
                rep.error(jw, f"target host {host!r} is not a compose service")
            scraped.setdefault(host, set()).add(port)
    for binary, port in BINARIES.items():
        if port is None:
            continue
        if port not in scraped.get(binary, set()):
            rep.error(where, f"does not scrape {binary}:{port}")
    for host, got in scraped.items():
        want = BINARIES.get(host)
        if want and got != {want}:
            rep.error(where, f"scrapes {host} on {sorted(got)}, docs/operations.md says {want}")


def lint_grafana(root: Path, rep: Report, compose: dict) -> None:
    ds_path = root / "grafana/provisioning/datasources/prometheus.yaml"
    db_path = root / "grafana/provisioning/dashboards/dashboards.yaml"
    for p in (ds_path, db_path):
        if not p.exists():
            rep.error(str(p.relative_to(root)), "missing")
    if ds_path.exists():
        doc = yaml.safe_load(ds_path.read_text(encoding="utf-8")) or {}
        sources = doc.get("datasources") or []
        prom = [d for d in sources if d.get("type") == "prometheus"]
        where = "grafana datasources"
        if not prom:
            rep.error(where, "no prometheus datasource")
        for d in prom:
            if d.get("uid") != "prometheus":
                rep.error(where, f"uid is {d.get('uid')!r}, dashboards expect 'prometheus'")
            host, port = url_port(str(d.get("url", "")))
            services = (compose.get("services") or {}) if compose else {}
            if host not in services or port != 9090:
                rep.error(where, f"url {d.get('url')!r} should be http://prometheus:9090")
        if sum(1 for d in sources if d.get("isDefault")) != 1:
            rep.error(where, "exactly one datasource should be isDefault")
    if db_path.exists():
        doc = yaml.safe_load(db_path.read_text(encoding="utf-8")) or {}
        paths = [(p.get("options") or {}).get("path") for p in doc.get("providers") or []]
        if not paths:
            rep.error("grafana dashboards provider", "no providers")
        grafana = ((compose.get("services") or {}).get("grafana") or {}) if compose else {}
        mounts = {str(v).split(":")[1] for v in grafana.get("volumes") or [] if ":" in str(v)}
        for p in paths:
            if p not in mounts:
                rep.error("grafana dashboards provider", f"path {p} is not mounted into grafana")
    for f in sorted((root / "grafana/dashboards").glob("**/*.json")):
        try:
            json.loads(f.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            rep.error(str(f.relative_to(root)), f"invalid JSON: {e}")


# --- Optional external tools -------------------------------------------------------------

def run_external(root: Path, rep: Report) -> None:
    promtool = shutil.which("promtool")
    if promtool:
        r = subprocess.run([promtool, "check", "config", "prometheus/prometheus.yml"],
                           cwd=root, capture_output=True, text=True)
        if r.returncode != 0:
            rep.error("promtool check config", (r.stdout + r.stderr).strip())
        else:
            rep.note("promtool check config: OK")
    else:
        rep.note("promtool not installed (Debian package `prometheus`): skipped `promtool check config`")

    compose_cmd = None
    if shutil.which("docker"):
        r = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
        if r.returncode == 0:
            compose_cmd = ["docker", "compose"]
    if compose_cmd is None and shutil.which("docker-compose"):
        compose_cmd = ["docker-compose"]
    if compose_cmd is None:
        rep.note("docker compose plugin not available: skipped `docker compose config -q`")
        return
    for env_file in sorted((root / "deploy").glob("*.env")):
        cmd = [*compose_cmd, "--env-file", str(env_file), "-f", "docker-compose.yml", "config", "-q"]
        r = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
        if r.returncode != 0:
            rep.error(f"docker compose config ({env_file.name})", (r.stdout + r.stderr).strip())
    rep.note("docker compose config -q: run for every deploy/*.env")


def validate_schema(root: Path, rep: Report, schema_path: Path) -> None:
    try:
        import jsonschema
    except ImportError:
        rep.note("jsonschema not installed: skipped --schema")
        return
    schema = json.loads(schema_path.read_text(encoding="utf-8"))
    doc = yaml.safe_load((root / "docker-compose.yml").read_text(encoding="utf-8"))
    errors = list(jsonschema.Draft7Validator(schema).iter_errors(doc))
    for e in errors:
        path = ".".join(str(p) for p in e.path) or "(top)"
        rep.error("docker-compose.yml (schema)", f"{path}: {e.message}")
    if not errors:
        rep.note(f"Compose spec schema ({schema_path.name}): valid")


# --- main --------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent,
                    help="workspace root (default: the parent of scripts/)")
    ap.add_argument("--offline", action="store_true",
                    help="skip promtool and `docker compose config` even when installed")
    ap.add_argument("--strict", action="store_true", help="treat warnings as errors")
    ap.add_argument("--schema", type=Path, metavar="FILE",
                    help="also validate against the Compose spec JSON schema (compose-spec/"
                         "compose-spec schema/compose-spec.json; needs the jsonschema package)")
    args = ap.parse_args()
    root: Path = args.root
    rep = Report()

    reads, ports = binary_env(root, rep)
    stages = lint_dockerfile(root, rep)
    # Profiles first so dev.env values resolve ${VAR} in URLs checked per service.
    compose_text = (root / "docker-compose.yml").read_text(encoding="utf-8")
    lint_profiles(root, Report(), compose_text)
    compose = lint_compose(root, rep, reads, ports, stages)
    lint_nats_auth(root, rep, compose)
    lint_cluster(root, rep, compose)
    lint_hardening(root, rep, compose)
    lint_prometheus(root, rep, compose)
    lint_grafana(root, rep, compose)
    if args.schema:
        validate_schema(root, rep, args.schema)
    if not args.offline:
        run_external(root, rep)

    for n in rep.notes:
        print(f"note: {n}")
    for w in rep.warnings:
        print(f"WARNING: {w}")
    for e in rep.errors:
        print(f"ERROR: {e}")
    failed = bool(rep.errors) or (args.strict and bool(rep.warnings))
    if failed:
        print(f"compose lint: FAILED ({len(rep.errors)} errors, {len(rep.warnings)} warnings)")
        return 1
    n = len((compose or {}).get("services") or {})
    print(f"compose lint: OK ({n} services)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
