"""Compatibility guard for the event contracts.

:func:`shape` reduces a proto file to the facts compatibility depends on (field numbers,
names, types, labels, reserved numbers; enum values). :func:`breaking_changes` lists
what a new shape breaks against a baseline: a field renumbered, retyped or re-labelled,
a number reused, a field removed without reserving its number, a message, enum or
enum value removed. Additions are allowed.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor, FileDescriptor


def _message_shape(desc: Descriptor) -> dict[str, Any]:
    proto = descriptor_pb2.DescriptorProto()
    desc.CopyToProto(proto)
    fields = {
        str(f.number): {
            "name": f.name,
            "type": f.type,
            "type_name": f.type_name.lstrip("."),
            "repeated": f.label == descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED,
        }
        for f in proto.field
    }
    reserved = sorted(n for r in proto.reserved_range for n in range(r.start, r.end))
    return {"fields": fields, "reserved_numbers": reserved}


def shape(file: FileDescriptor) -> dict[str, Any]:
    """JSON-able shape of every message (nested too) and top-level enum in ``file``."""
    messages: dict[str, Any] = {}

    def visit(desc: Descriptor) -> None:
        messages[desc.full_name] = _message_shape(desc)
        for nested in desc.nested_types:
            visit(nested)

    for desc in file.message_types_by_name.values():
        visit(desc)
    enums = {
        e.full_name: {str(v.number): v.name for v in e.values}
        for e in file.enum_types_by_name.values()
    }
    return {"package": file.package, "messages": messages, "enums": enums}


def breaking_changes(baseline: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Every incompatibility of ``new`` against ``baseline`` (empty: compatible)."""
    problems: list[str] = []
    if baseline["package"] != new["package"]:
        problems.append(f"package changed: {baseline['package']} -> {new['package']}")
    for name, old_msg in baseline["messages"].items():
        new_msg = new["messages"].get(name)
        if new_msg is None:
            problems.append(f"message {name} removed")
            continue
        for number, old_field in old_msg["fields"].items():
            new_field = new_msg["fields"].get(number)
            if new_field is None:
                if int(number) not in new_msg["reserved_numbers"]:
                    problems.append(
                        f"{name} field {number} ({old_field['name']}) removed "
                        "without reserving its number"
                    )
                continue
            for aspect in ("name", "type", "type_name", "repeated"):
                if old_field[aspect] != new_field[aspect]:
                    problems.append(
                        f"{name} field {number} {aspect} changed: "
                        f"{old_field[aspect]!r} -> {new_field[aspect]!r}"
                    )
        for number in old_msg["reserved_numbers"]:
            if str(number) in new_msg["fields"]:
                problems.append(f"{name} reuses reserved field number {number}")
    for name, old_values in baseline["enums"].items():
        new_values = new["enums"].get(name)
        if new_values is None:
            problems.append(f"enum {name} removed")
            continue
        for number, value_name in old_values.items():
            if new_values.get(number) != value_name:
                problems.append(
                    f"enum {name} value {number} changed: {value_name!r} -> "
                    f"{new_values.get(number)!r}"
                )
    return problems


def additions(baseline: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What ``new`` adds that the baseline does not record yet."""
    added: list[str] = []
    for name, new_msg in new["messages"].items():
        old_msg = baseline["messages"].get(name)
        if old_msg is None:
            added.append(f"message {name}")
            continue
        added += [f"{name} field {n}" for n in new_msg["fields"] if n not in old_msg["fields"]]
    for name, values in new["enums"].items():
        old_values = baseline["enums"].get(name, {})
        added += [f"enum {name} value {n}" for n in values if n not in old_values]
    return added
