#!/usr/bin/env python3
"""Renders and lints the job-executor chart with the real Helm engine (helm-python-sdk, which
embeds Helm's Go SDK), offline. Used by tests/install.rs and scripts/render-deploy.

  helm.py render CHART [-f VALUES]... [--name NAME] [--namespace NS] [--only|--exclude KIND,...]
      prints the rendered manifests as one YAML stream in Helm's install order, each document
      headed by `# Source: <template>`, as `helm template` does; NOTES.txt goes to stderr
      with --notes.
  helm.py lint CHART [-f VALUES]...
      prints every lint message; exits 1 if any is an error.
"""

import argparse
import re
import sys

import helm_python as helm

# Helm's install order (pkg/release/util/kind_sorter.go); other kinds go last.
INSTALL_ORDER = [
    "PriorityClass", "Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange",
    "PodSecurityPolicy", "PodDisruptionBudget", "ServiceAccount", "Secret", "SecretList",
    "ConfigMap", "StorageClass", "PersistentVolume", "PersistentVolumeClaim",
    "CustomResourceDefinition", "ClusterRole", "ClusterRoleList", "ClusterRoleBinding",
    "ClusterRoleBindingList", "Role", "RoleList", "RoleBinding", "RoleBindingList", "Service",
    "DaemonSet", "Pod", "ReplicationController", "ReplicaSet", "Deployment",
    "HorizontalPodAutoscaler", "StatefulSet", "Job", "CronJob", "IngressClass", "Ingress",
    "APIService", "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration",
]

KIND = re.compile(r"^kind:\s*(\S+)\s*$", re.MULTILINE)
NAME = re.compile(r"^metadata:\s*\n(?:\s+.*\n)*?\s+name:\s*(\S+)", re.MULTILINE)


def merge(base, override):
    """Deep-merges values files as Helm does for repeated -f (maps merge, the rest replaces)."""
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value
    return base


def load_values(files):
    values = {}
    for path in files or []:
        with open(path, encoding="utf-8") as handle:
            merge(values, helm.values_from_yaml(handle.read()) or {})
    return values


def documents(rendered):
    """(order, template, index, text) for each non-empty document of each template."""
    docs = []
    for template, text in rendered.items():
        if template.endswith("NOTES.txt"):
            continue
        for index, doc in enumerate(re.split(r"^---\s*$", text, flags=re.MULTILINE)):
            body = "\n".join(
                line for line in doc.strip("\n").splitlines()
                if not line.startswith("# Source:")
            ).strip("\n")
            match = KIND.search(body)
            if not match:
                continue  # only comments or whitespace
            kind = match.group(1)
            order = INSTALL_ORDER.index(kind) if kind in INSTALL_ORDER else len(INSTALL_ORDER)
            docs.append((order, template, index, kind, body))
    docs.sort(key=lambda d: (d[0], d[1], d[2]))
    return docs


def render(args):
    values = load_values(args.values)
    with helm.Chart.load(args.chart) as chart:
        chart.validate_schema(values)
        rendered = chart.render(
            values, name=args.name, namespace=args.namespace, is_install=True
        )
    only = set(args.only.split(",")) if args.only else None
    exclude = set(args.exclude.split(",")) if args.exclude else set()
    out = []
    for _, template, _, kind, body in documents(rendered):
        if (only is None or kind in only) and kind not in exclude:
            out.append(f"---\n# Source: {template}\n{body}\n")
    sys.stdout.write("".join(out))
    if args.notes:
        for template, text in rendered.items():
            if template.endswith("NOTES.txt"):
                sys.stderr.write(text)


def lint(args):
    values = load_values(args.values)
    report = helm.lint(args.chart, values or None, namespace=args.namespace)
    errors = 0
    for message in report.get("messages", []):
        severity = {0: "UNKNOWN", 1: "INFO", 2: "WARNING", 3: "ERROR"}.get(
            message.get("severity"), "?"
        )
        print(f"[{severity}] {message.get('path', '')}: {message.get('error', '')}")
        errors += message.get("severity") == 3
    for error in report.get("errors") or []:
        print(f"[ERROR] {error}")
        errors += 1
    print(f"linted {report.get('total_charts_linted', 0)} chart(s), {errors} error(s)")
    return 1 if errors else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("render", "lint"):
        command = sub.add_parser(name)
        command.add_argument("chart")
        command.add_argument("-f", "--values", action="append")
        command.add_argument("--namespace", default="job-executor")
        if name == "render":
            command.add_argument("--name", default="job-executor")
            command.add_argument("--only", help="comma-separated kinds to print")
            command.add_argument("--exclude", help="comma-separated kinds not to print")
            command.add_argument("--notes", action="store_true")
    args = parser.parse_args()
    if args.command == "render":
        render(args)
        return 0
    return lint(args)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except helm.HelmError as error:
        print(f"helm: {error}", file=sys.stderr)
        sys.exit(1)
