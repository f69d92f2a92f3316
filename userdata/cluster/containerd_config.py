#!/usr/bin/env python3
"""containerd config default | containerd_config.py > /etc/containerd/config.toml

Sets SystemdCgroup = true on runc and the CRI registry config_path, by config version (3: containerd
2.x, 2: 1.x; containerd docs/cri/config.md). Edits parsed TOML, not text (why: node_cloud_config in
components/kubeadm.py); the output is read back and compared before it is written.
"""

import re
import sys
import tomllib

HOSTS_DIR = "/etc/containerd/certs.d"
CRI = {
    3: (
        ("plugins", "io.containerd.cri.v1.runtime", "containerd", "runtimes", "runc"),
        ("plugins", "io.containerd.cri.v1.images", "registry"),
    ),
    2: (
        ("plugins", "io.containerd.grpc.v1.cri", "containerd", "runtimes", "runc"),
        ("plugins", "io.containerd.grpc.v1.cri", "registry"),
    ),
}
TRANSFER = ("plugins", "io.containerd.transfer.v1.local")  # 2.x pulls outside the CRI (ctr)


class ConfigError(Exception):
    pass


def table(doc, path):
    for depth, key in enumerate(path):
        doc = doc.get(key) if isinstance(doc, dict) else None
        if not isinstance(doc, dict):
            raise ConfigError(f"[{'.'.join(path[: depth + 1])}] is missing")
    return doc


def configure(doc):
    version = doc.get("version")
    if version not in CRI:
        raise ConfigError(f"config version {version!r} is neither 2 (containerd 1.x) nor 3 (2.x)")
    if {"cri", "io.containerd.grpc.v1.cri"} & set(doc.get("disabled_plugins", [])):
        raise ConfigError("the CRI plugin is disabled")
    runc_path, registry_path = CRI[version]
    runc = table(doc, runc_path)
    # An options-only runc table would replace the default entry and lose its runtime_type.
    if not runc.get("runtime_type"):
        raise ConfigError("runc has no runtime_type")
    runc.setdefault("options", {})["SystemdCgroup"] = True
    table(doc, registry_path)["config_path"] = HOSTS_DIR  # one directory (containerd issue #12415)
    transfer = doc.get(TRANSFER[0], {}).get(TRANSFER[1], {})
    if "config_path" in transfer:
        transfer["config_path"] = HOSTS_DIR
    return doc


ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def string(text):
    return (
        '"' + "".join(ESCAPES.get(c) or (f"\\u{ord(c):04x}" if ord(c) < 32 or ord(c) == 127 else c) for c in text) + '"'
    )


def key(name):
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else string(name)


def value(item):
    if isinstance(item, bool):
        return "true" if item else "false"
    if isinstance(item, (int, float)):
        return repr(item)
    if isinstance(item, str):
        return string(item)
    if isinstance(item, list):
        return "[" + ", ".join(value(i) for i in item) + "]"
    if isinstance(item, dict):
        return "{" + ", ".join(f"{key(k)} = {value(v)}" for k, v in item.items()) + "}"
    raise ConfigError(f"cannot write a {type(item).__name__}")


def dumps(doc, path=()):
    """TOML 1.0: scalars and arrays of a table, then its sub-tables as [a.b] sections."""
    lines = ["[" + ".".join(map(key, path)) + "]"] if path else []
    lines += [f"{key(k)} = {value(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    sections = [dumps(v, (*path, k)) for k, v in doc.items() if isinstance(v, dict)]
    return "\n\n".join(["\n".join(lines), *sections]).strip("\n") + "\n"


def render(default_config):
    doc = configure(tomllib.loads(default_config))
    text = "# containerd_config.py output from `containerd config default`\n" + dumps(doc)
    if tomllib.loads(text) != doc:
        raise ConfigError("the output does not read back as the intended configuration")
    return text


if __name__ == "__main__":
    try:
        sys.stdout.write(render(sys.stdin.read()))
    except (tomllib.TOMLDecodeError, ConfigError) as error:
        sys.exit(f"containerd_config.py: {error}")
