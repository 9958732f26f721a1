"""Compressed SavedModel exports: float16 or int8 (dynamic-range) storage of the weights.

An export-time transform of a finished SavedModel (docs/DESIGN.md, "Compressed exports"):
the large float32 variables (embedding tables, dense and attention kernels, the top-K
index's catalog embeddings, the cached MiniLM text tables and the MiniLM encoder's own
weights) are stored as

- ``float16``: each value rounded to half precision;
- ``int8``: int8 values and float32 scales (symmetric, ``max |w| / 127``): one scale per row
  of a table that is read by row (an embedding lookup), else one per output channel (the
  maximum over axis 0: per column of a dense kernel);

and every place that reads such a variable gets its value back as float32 in the graph
(``Cast``, and for int8 a ``Mul`` by the scales, which are constants of the graph; a table
read by row dequantises only the gathered rows). Nothing else changes: signature names,
inputs and output dtypes are those of the full export, so TF Serving, the stand-in and the
API serve a compressed version like any other, and compute stays float32.

Why a rewrite of the SavedModel and not of the Keras objects: the same code then covers
every variable the export holds, including those of SavedModels the export embeds (the
MiniLM encoder is a loaded SavedModel, its variables reach our functions only as captured
resources) and of the Transform graph. The rewrite follows each variable's resource handle
through the function library (call ops, ``If`` / ``Case`` branches, ``Identity``); a
variable read by an op it does not know, or whose function argument also receives another
variable, stays float32 and is named in the report.

    report = compress_saved_model(src_dir, dst_dir, "int8")
    compress_in_place(export_dir, "float16")      # what the Trainers call

Loading: ``tf.saved_model.load`` (the Python object graph) and TF Serving's loader (the
MetaGraphDef's graph and its restore function, as ``tf.compat.v1.saved_model.load`` runs
it) both work; both are tested.
"""
import collections
import json
import os
import shutil
import tempfile
from typing import Dict, List, Optional, Tuple

from absl import logging
import numpy as np

MODES = ("none", "float16", "int8")
REPORT_FILE = "compression.json"          # written into assets.extra/ of a compressed export
# Variables with fewer values stay float32: biases, layer norms, scalars (no size to win,
# and their errors would add to every output).
MIN_ELEMENTS = 1024
# Data tables, not weights: the related_items signature's partner weights and engagement
# counts (trainer/related_items.py) feed the API's candidate stage as exact counts and stay
# float32 whatever the mode (matched on the variable name's last part).
def _keep_float32():
    from trainer import related_items  # pylint: disable=import-outside-toplevel
    return frozenset((related_items.TRANSITION_WEIGHTS, related_items.COOCCURRENCE_WEIGHTS,
                      related_items.TEXT_WEIGHTS, related_items.ENGAGEMENTS))


_INT8_MAX = 127.0
_FLOAT16_MAX = 65504.0

_CALL_OPS = {"StatefulPartitionedCall": ("f", 0), "PartitionedCall": ("f", 0)}
_BRANCH_OPS = {"If": ("then_branch", "else_branch"), "StatelessIf": ("then_branch",
                                                                     "else_branch")}
_CASE_OPS = ("Case", "StatelessCase")
# Resource consumers that do not depend on the value's dtype.
_DTYPE_FREE = ("VarIsInitializedOp", "DisableCopyOnRead", "VariableShape",
               "DestroyResourceOp")


def check_mode(mode: str, where: str = "compression") -> str:
    if mode not in MODES:
        raise ValueError(f"{where} must be one of {list(MODES)}, got {mode!r}")
    return mode


# ------------------------------------------------------------------ graph addressing
class _Scope:
    """One graph body: the top-level GraphDef or one FunctionDef of its library. Tensor
    references differ: "node" / "node:i" at the top, "arg", "node:out_arg:i" in functions."""

    def __init__(self, graph_def, function=None):
        self.function = function
        self.nodes = list(function.node_def if function is not None else graph_def.node)
        self.by_name = {n.name: n for n in self.nodes}
        self.args = ([a.name for a in function.signature.input_arg]
                     if function is not None else [])

    @property
    def name(self):
        return self.function.signature.name if self.function is not None else ""

    def add(self, node_def):
        container = (self.function.node_def if self.function is not None else None)
        if container is None:
            raise RuntimeError("adding nodes to the top-level graph is not supported")
        node = container.add()
        node.CopyFrom(node_def)
        self.nodes.append(node)
        self.by_name[node.name] = node
        return node

    def output_ref(self, node_name: str, out_arg: str, index: int = 0) -> str:
        if self.function is None:
            return node_name if index == 0 else f"{node_name}:{index}"
        return f"{node_name}:{out_arg}:{index}"

    @staticmethod
    def source(ref: str) -> Tuple[str, str, int]:
        """(node or arg name, output arg name or "", index) of an input reference."""
        parts = ref.split(":")
        if len(parts) == 1:
            return parts[0], "", 0
        if len(parts) == 2:
            return parts[0], "", int(parts[1])
        return parts[0], parts[1], int(parts[2])

    def consumers(self, ref_matches) -> List[Tuple[object, int]]:
        """(node, input position) for every data input that `ref_matches(ref)`."""
        out = []
        for node in self.nodes:
            for i, ref in enumerate(node.input):
                if not ref.startswith("^") and ref_matches(ref):
                    out.append((node, i))
        return out

    def replace_uses(self, old: str, new: str, skip=()) -> None:
        """Every data input and function return reading `old` reads `new` instead."""
        for node in self.nodes:
            if node.name in skip:
                continue
            for i, ref in enumerate(node.input):
                if ref == old:
                    node.input[i] = new
        if self.function is not None:
            for key, ref in self.function.ret.items():
                if ref == old:
                    self.function.ret[key] = new


def _refers_to(name: str, index: int = 0, out_arg: Optional[str] = None):
    """A matcher of input references to output `index` of node / arg `name`."""
    def match(ref):
        node, arg, i = _Scope.source(ref)
        return node == name and i == index and (out_arg is None or arg in ("", out_arg))
    return match


# ------------------------------------------------------------------ resource flow
class _Flow:
    """Where each variable's resource handle goes: the read sites per variable, the
    restore / save sites, and why a variable cannot be rewritten."""

    def __init__(self, graph_def):
        self.graph_def = graph_def
        self.top = _Scope(graph_def)
        self.scopes = {f.signature.name: _Scope(graph_def, f)
                       for f in graph_def.library.function}
        self.reads = collections.defaultdict(list)      # var -> [(scope, node)]
        self.gathered = set()                           # vars read by row somewhere
        self.restores = collections.defaultdict(list)   # var -> [(scope, AssignVariableOp)]
        self.saves = collections.defaultdict(list)      # var -> [(scope, ReadVariableOp)]
        self.problems = collections.defaultdict(set)    # var -> reasons it stays float32
        self.dead_reads = collections.defaultdict(list)  # var -> unused top-level reads
        self.arg_vars = collections.defaultdict(set)    # (function, arg) -> variables

    def trace(self, var: str) -> None:
        seen = set()
        stack = [(self.top, _refers_to(var), var)]
        while stack:
            scope, match, label = stack.pop()
            if (scope.name, label) in seen:
                continue
            seen.add((scope.name, label))
            for node, position in scope.consumers(match):
                self._consumer(var, scope, node, position, stack)

    def _enter(self, var, function_name, arg_index, stack):
        scope = self.scopes.get(function_name)
        if scope is None or arg_index >= len(scope.args):
            self.problems[var].add(f"handle passed to unknown function {function_name!r}")
            return
        arg = scope.args[arg_index]
        self.arg_vars[(function_name, arg)].add(var)
        stack.append((scope, lambda ref, _a=arg: ref == _a, arg))

    def _consumer(self, var, scope, node, position, stack):
        op = node.op
        if scope.function is None and op in ("ReadVariableOp", "ResourceGather"):
            # tf.saved_model.save leaves an unused read of each variable at the top level.
            if scope.consumers(_refers_to(node.name)):
                self.problems[var].add(f"{op} in the top-level graph")
            else:
                self.dead_reads[var].append(node)
        elif op == "ReadVariableOp":
            if "__traced_save" in scope.name:
                self.saves[var].append((scope, node))
            else:
                self.reads[var].append((scope, node))
                if _row_gathers(scope, node):
                    self.gathered.add(var)
        elif op == "ResourceGather" and position == 0:
            if "batch_dims" in node.attr and node.attr["batch_dims"].i != 0:
                self.problems[var].add(f"ResourceGather with batch_dims in {scope.name}")
            self.reads[var].append((scope, node))
            self.gathered.add(var)
        elif op == "AssignVariableOp" and "__traced_restore" in scope.name:
            self.restores[var].append((scope, node))
        elif op in _DTYPE_FREE:
            pass
        elif op in _CALL_OPS:
            self._enter(var, node.attr["f"].func.name, position, stack)
        elif op in _BRANCH_OPS and position > 0:
            for attr in _BRANCH_OPS[op]:
                self._enter(var, node.attr[attr].func.name, position - 1, stack)
        elif op in _CASE_OPS and position > 0:
            for branch in node.attr["branches"].list.func:
                self._enter(var, branch.name, position - 1, stack)
        elif op == "Identity":
            stack.append((scope, _refers_to(node.name, 0, "output"), node.name))
        else:
            self.problems[var].add(f"read by {op} in {scope.name or 'the graph'}")


# ------------------------------------------------------------------ quantisation
def quantize(value: np.ndarray, mode: str, per_row: bool):
    """(stored values, scales or None). int8: symmetric, scale = max|w| / 127 per row
    (`per_row`) or per slice of axis 0 (per output channel); a zero slice gets scale 1."""
    if mode == "float16":
        return value.astype(np.float16), None
    if per_row:
        axes = tuple(range(1, value.ndim))
    else:
        axes = (0,)
    peak = np.max(np.abs(value), axis=axes, keepdims=True)
    scale = np.where(peak > 0, peak / _INT8_MAX, 1.0).astype(np.float32)
    stored = np.clip(np.rint(value / scale), -_INT8_MAX, _INT8_MAX).astype(np.int8)
    return stored, scale


def dequantize(stored: np.ndarray, scale: Optional[np.ndarray]) -> np.ndarray:
    """The float32 values the rewritten graph computes from the stored ones."""
    out = stored.astype(np.float32)
    return out if scale is None else out * scale


# ------------------------------------------------------------------ node builders
def _node(name, op, inputs, **attrs):
    from tensorflow.core.framework import node_def_pb2  # pylint: disable=import-outside-toplevel
    node = node_def_pb2.NodeDef(name=name, op=op)
    node.input.extend(inputs)
    for key, value in attrs.items():
        node.attr[key].CopyFrom(value)
    return node


def _type_attr(dtype):
    from tensorflow.core.framework import attr_value_pb2  # pylint: disable=import-outside-toplevel
    return attr_value_pb2.AttrValue(type=dtype)


def _const(name, array):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from tensorflow.core.framework import attr_value_pb2  # pylint: disable=import-outside-toplevel
    tensor = tf.make_tensor_proto(array)
    return _node(name, "Const", [], dtype=_type_attr(tensor.dtype),
                 value=attr_value_pb2.AttrValue(tensor=tensor))


def _unique(scope, base):
    name, i = base, 0
    while name in scope.by_name:
        i += 1
        name = f"{base}_{i}"
    return name


def _row_gathers(scope, read) -> Optional[list]:
    """The GatherV2 nodes (axis 0, no batch dims) that are the only consumers of a
    ReadVariableOp's value (an embedding lookup on a tensor, as Keras 3 does), or None."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    consumers = scope.consumers(_refers_to(read.name, 0, "value"))
    if scope.function is None or not consumers:
        return None
    for node, position in consumers:
        if node.op != "GatherV2" or position != 0 or (
                "batch_dims" in node.attr and node.attr["batch_dims"].i != 0):
            return None
        axis = scope.by_name.get(_Scope.source(node.input[2])[0])
        if axis is None or axis.op != "Const" or int(
                tf.make_ndarray(axis.attr["value"].tensor)) != 0:
            return None
    return [node for node, _ in consumers]


def _rewrite_read(scope, node, stored_dtype, scale: Optional[np.ndarray], per_row: bool):
    """`node` (ReadVariableOp / ResourceGather) now yields the stored dtype; its consumers
    read the float32 values (Cast [* scales]). Rows gathered from the variable (ResourceGather,
    or a read whose only consumers gather rows) are dequantised after the gather: only those
    rows, with their own scales."""
    node.attr["dtype"].type = stored_dtype
    if node.op == "ResourceGather":
        _dequantize_output(scope, node.name, "output", stored_dtype, scale, per_row,
                           (node.input[1], node.attr["Tindices"]))
        return
    gathers = _row_gathers(scope, node)
    if gathers is None:
        _dequantize_output(scope, node.name, "value", stored_dtype, scale, per_row, None)
        return
    for gather in gathers:
        gather.attr["Tparams"].type = stored_dtype
        _dequantize_output(scope, gather.name, "output", stored_dtype, scale, per_row,
                           (gather.input[1], gather.attr["Tindices"]))


def _dequantize_output(scope, name, out_arg, stored_dtype, scale, per_row, rows_of):
    """Consumers of output `out_arg` of node `name` (stored dtype) read Cast(it) [* scale]
    instead. `rows_of` (indices ref, Tindices attr): the output holds rows of the variable
    gathered with those indices."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from tensorflow.core.framework import attr_value_pb2  # pylint: disable=import-outside-toplevel
    float32 = _type_attr(tf.float32.as_datatype_enum)
    int32 = _type_attr(tf.int32.as_datatype_enum)
    old = scope.output_ref(name, out_arg)
    cast = scope.add(_node(_unique(scope, name + "/dequantize"), "Cast", [old],
                           SrcT=_type_attr(stored_dtype), DstT=float32,
                           Truncate=attr_value_pb2.AttrValue(b=False)))
    new = scope.output_ref(cast.name, "y")
    added = {cast.name}
    if scale is not None:
        if rows_of is not None and per_row:
            # One scale per gathered row: gather the scales with the same indices.
            indices, tindices = rows_of
            rows = scope.add(_const(_unique(scope, name + "/row_scales"), scale.reshape(-1)))
            axis = scope.add(_const(_unique(scope, name + "/axis"), np.array(0, np.int32)))
            gathered = scope.add(_node(
                _unique(scope, name + "/gather_scales"), "GatherV2",
                [scope.output_ref(rows.name, "output"), indices,
                 scope.output_ref(axis.name, "output")],
                Tparams=float32, Tindices=tindices, Taxis=int32,
                batch_dims=attr_value_pb2.AttrValue(i=0)))
            last = scope.add(_const(_unique(scope, name + "/last"), np.array(-1, np.int32)))
            factor = scope.add(_node(
                _unique(scope, name + "/expand_scales"), "ExpandDims",
                [scope.output_ref(gathered.name, "output"),
                 scope.output_ref(last.name, "output")], T=float32, Tdim=int32))
            added |= {rows.name, axis.name, gathered.name, last.name, factor.name}
            factor_ref = scope.output_ref(factor.name, "output")
        else:
            # A whole-variable read keeps the scales' keepdims shape; gathered rows of a
            # per-channel table broadcast against the scales without their axis 0.
            shaped = scale if rows_of is None else scale.reshape(scale.shape[1:])
            const = scope.add(_const(_unique(scope, name + "/scales"), shaped))
            added.add(const.name)
            factor_ref = scope.output_ref(const.name, "output")
        mul = scope.add(_node(_unique(scope, name + "/dequantized"), "Mul",
                              [new, factor_ref], T=float32))
        added.add(mul.name)
        new = scope.output_ref(mul.name, "z")
    scope.replace_uses(old, new, skip=added)


def _retype_chain(scope, ref: str, dtype, backwards: bool) -> None:
    """Restore (`backwards` from AssignVariableOp's value to RestoreV2) or save (forwards
    from ReadVariableOp to SaveV2) functions: the tensors between the variable and the
    checkpoint carry the stored dtype."""
    if backwards:
        name, _, index = _Scope.source(ref)
        node = scope.by_name[name]
        if node.op == "Identity":
            node.attr["T"].type = dtype
            _retype_chain(scope, node.input[0], dtype, True)
        elif node.op == "RestoreV2":
            node.attr["dtypes"].list.type[index] = dtype
        else:
            raise ValueError(f"unexpected {node.op} between RestoreV2 and the variable")
        return
    name, out_arg, index = _Scope.source(ref)
    for node, position in scope.consumers(_refers_to(name, index, out_arg or None)):
        if node.op == "Identity":
            node.attr["T"].type = dtype
            _retype_chain(scope, scope.output_ref(node.name, "output"), dtype, False)
        elif node.op in ("SaveV2", "SaveSlices"):
            node.attr["dtypes"].list.type[position - 3] = dtype
        else:
            raise ValueError(f"unexpected {node.op} between the variable and SaveV2")


# ------------------------------------------------------------------ the SavedModel
def _checkpoint_keys(flow: _Flow, restore_call) -> Dict[str, str]:
    """variable (VarHandleOp name) -> checkpoint key, from the restore function: the
    AssignVariableOp of each argument and the RestoreV2 tensor name it takes."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    scope = flow.scopes[restore_call.attr["f"].func.name]
    arg_to_var = {arg: restore_call.input[i] for i, arg in enumerate(scope.args)}
    keys = {}
    for node in scope.nodes:
        if node.op != "AssignVariableOp":
            continue
        var = arg_to_var.get(node.input[0])
        ref = node.input[1]
        while True:
            source, _, index = _Scope.source(ref)
            producer = scope.by_name[source]
            if producer.op != "Identity":
                break
            ref = producer.input[0]
        if producer.op != "RestoreV2" or var is None:
            continue
        names = scope.by_name[_Scope.source(producer.input[1])[0]]
        values = tf.make_ndarray(names.attr["value"].tensor)
        keys[var.split(":")[0]] = values[index].decode()
    return keys


def compress_saved_model(src_dir: str, dst_dir: str, mode: str,
                         min_elements: int = MIN_ELEMENTS, keep=None) -> Dict:
    """Writes a copy of the SavedModel `src_dir` to `dst_dir` (must not exist) with its
    float32 variables of at least `min_elements` values stored as `mode` ("float16" |
    "int8"), except those whose name's last part is in `keep` (default: the related-items
    tables). Returns the report: sizes, the variables rewritten and those left float32
    (with the reason); it is also written to `assets.extra/compression.json`."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from tensorflow.core.protobuf import saved_model_pb2  # pylint: disable=import-outside-toplevel
    from tensorflow.core.protobuf import trackable_object_graph_pb2  # pylint: disable=C0415

    check_mode(mode)
    keep = _keep_float32() if keep is None else frozenset(keep)
    if mode == "none":
        raise ValueError("compress_saved_model needs mode 'float16' or 'int8'")
    stored_dtype = tf.float16 if mode == "float16" else tf.int8
    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(src_dir, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    if len(saved_model.meta_graphs) != 1:
        raise ValueError(f"{src_dir}: expected one MetaGraphDef (a TF2 SavedModel), got "
                         f"{len(saved_model.meta_graphs)}")
    meta_graph = saved_model.meta_graphs[0]
    graph_def = meta_graph.graph_def
    restore_call = next(n for n in graph_def.node
                        if n.name == meta_graph.saver_def.restore_op_name)
    reader = tf.train.load_checkpoint(os.path.join(src_dir, "variables", "variables"))
    flow = _Flow(graph_def)
    variables = [n for n in graph_def.node if n.op == "VarHandleOp"]
    for var in variables:
        flow.trace(var.name)
    keys = _checkpoint_keys(flow, restore_call)

    # Arguments that receive several variables: none of those variables is rewritten
    # (the graph constants of int8 scales belong to one variable).
    for (function, arg), owners in flow.arg_vars.items():
        if len(owners) > 1:
            for var in owners:
                flow.problems[var].add(f"argument {arg} of {function} also receives "
                                       f"{sorted(owners - {var})[:2]}")
    float_dtype = tf.float32.as_datatype_enum
    rewritten, kept = [], []
    values = {}
    for var in variables:
        shape = [int(d.size) for d in var.attr["shape"].shape.dim]
        if var.attr["dtype"].type != float_dtype or any(s < 0 for s in shape):
            continue
        size = int(np.prod(shape)) if shape else 1
        name = var.name
        entry = {"variable": var.attr["shared_name"].s.decode() or name, "shape": shape}
        reason = None
        if size < min_elements:
            continue
        if entry["variable"].split("/")[-1] in keep:
            reason = "kept: a data table"
        elif mode == "int8" and len(shape) < 2:
            reason = "int8 needs a matrix or higher rank"
        elif flow.problems.get(name):
            reason = "; ".join(sorted(flow.problems[name]))
        elif name not in keys or not flow.restores.get(name):
            reason = "no restore entry found"
        if reason is None:
            value = reader.get_tensor(keys[name])
            if mode == "float16" and np.max(np.abs(value), initial=0.0) > _FLOAT16_MAX:
                reason = "values beyond the float16 range"
        if reason is not None:
            kept.append(dict(entry, reason=reason))
            continue
        per_row = mode == "int8" and name in flow.gathered and len(shape) == 2
        stored, scale = quantize(value, mode, per_row)
        values[keys[name]] = stored
        error = np.abs(dequantize(stored, scale) - value)
        rewritten.append(dict(entry, key=keys[name], per_row=per_row,
                              max_abs_error=float(error.max(initial=0.0)),
                              mean_abs_value=float(np.abs(value).mean())))
        new_type = stored_dtype.as_datatype_enum
        var.attr["dtype"].type = new_type
        for scope, node in flow.reads[name]:
            _rewrite_read(scope, node, new_type, scale, per_row)
        for node in flow.dead_reads[name]:
            node.attr["dtype"].type = new_type
        for scope, node in flow.saves[name]:
            node.attr["dtype"].type = new_type
            _retype_chain(scope, scope.output_ref(node.name, "value"), new_type, False)
        for scope, node in flow.restores[name]:
            node.attr["dtype"].type = new_type
            _retype_chain(scope, node.input[1], new_type, True)

    # The Python loader (tf.saved_model.load) creates variables from the object graph; its
    # node ids are those of the checkpoint's object graph, which names each key.
    object_graph = trackable_object_graph_pb2.TrackableObjectGraph()
    object_graph.ParseFromString(reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
    new_dtypes = {key: tf.as_dtype(stored.dtype).as_datatype_enum
                  for key, stored in values.items()}
    for node_id, node in enumerate(object_graph.nodes):
        for attribute in node.attributes:
            if attribute.checkpoint_key in new_dtypes:
                saved = meta_graph.object_graph_def.nodes[node_id]
                if saved.WhichOneof("kind") != "variable":
                    raise ValueError(f"object {node_id} of {src_dir} is no variable")
                saved.variable.dtype = new_dtypes[attribute.checkpoint_key]

    os.makedirs(dst_dir)
    for name in os.listdir(src_dir):
        if name in ("saved_model.pb", "variables", "fingerprint.pb"):
            continue
        source = os.path.join(src_dir, name)
        (shutil.copytree if os.path.isdir(source) else shutil.copy2)(
            source, os.path.join(dst_dir, name))
    with open(os.path.join(dst_dir, "saved_model.pb"), "wb") as f:
        f.write(saved_model.SerializeToString())
    _write_checkpoint(reader, values, os.path.join(dst_dir, "variables", "variables"))
    _write_fingerprint(dst_dir)
    report = {"mode": mode, "min_elements": min_elements,
              "size_bytes": {"full": directory_bytes(src_dir),
                             "compressed": directory_bytes(dst_dir)},
              "variables_rewritten": len(rewritten),
              "values_rewritten": int(sum(np.prod(v["shape"]) for v in rewritten)),
              "kept_float32": kept, "rewritten": rewritten}
    extra = os.path.join(dst_dir, "assets.extra")
    os.makedirs(extra, exist_ok=True)
    with open(os.path.join(extra, REPORT_FILE), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
    return report


def _write_checkpoint(reader, replaced: Dict[str, np.ndarray], prefix: str) -> None:
    """Every tensor of `reader`'s checkpoint, those in `replaced` with their new values,
    under the same keys (one shard, as tf.saved_model.save writes)."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    os.makedirs(os.path.dirname(prefix), exist_ok=True)
    names = sorted(reader.get_variable_to_dtype_map())
    tensors = [replaced[n] if n in replaced else reader.get_tensor(n) for n in names]
    tensors = [tf.constant(t, dtype=tf.string) if isinstance(t, (bytes, str)) or (
        isinstance(t, np.ndarray) and t.dtype == object) else tf.constant(t)
        for t in tensors]
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names,
                      shape_and_slices=[""] * len(names), tensors=tensors)


def _write_fingerprint(export_dir: str) -> None:
    """fingerprint.pb of the rewritten files (TF records it at save time)."""
    try:
        from tensorflow.python.saved_model.pywrap_saved_model import (  # pylint: disable=C0415
            fingerprinting)
        data = fingerprinting.CreateFingerprintDef(export_dir)
    except Exception:  # noqa: BLE001  optional file: loaders do not need it
        return
    with open(os.path.join(export_dir, "fingerprint.pb"), "wb") as f:
        f.write(data)


def directory_bytes(path: str) -> int:
    """Bytes of every file under `path`."""
    return sum(os.path.getsize(os.path.join(base, name))
               for base, _, files in os.walk(path) for name in files)


def compress_in_place(export_dir: str, mode: str,
                      min_elements: int = MIN_ELEMENTS, keep=None) -> Optional[Dict]:
    """The Trainers' export step: replaces the SavedModel in `export_dir` (local or a
    tf.io.gfile URL such as gs://) by its `mode` compression, assets and the warm-up file
    kept (nothing for "none"); returns the report (None for "none")."""
    if check_mode(mode) == "none":
        return None
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    remote = "://" in export_dir
    staging = tempfile.mkdtemp(prefix=".compress-", dir=None if remote else os.path.dirname(
        os.path.abspath(export_dir)))
    try:
        source = export_dir
        if remote:                      # the rewrite reads and writes local files
            source = os.path.join(staging, "full")
            _copy_tree(export_dir, source)
        target = os.path.join(staging, "model")
        report = compress_saved_model(source, target, mode, min_elements, keep)
        for name in ("saved_model.pb", "variables", "fingerprint.pb"):
            path = os.path.join(export_dir, name)
            if tf.io.gfile.isdir(path):
                tf.io.gfile.rmtree(path)
            elif tf.io.gfile.exists(path):
                tf.io.gfile.remove(path)
        _copy_tree(os.path.join(target, "variables"), os.path.join(export_dir, "variables"))
        for name in ("saved_model.pb", "fingerprint.pb", os.path.join("assets.extra",
                                                                      REPORT_FILE)):
            if os.path.exists(os.path.join(target, name)):
                tf.io.gfile.makedirs(os.path.dirname(os.path.join(export_dir, name)))
                tf.io.gfile.copy(os.path.join(target, name), os.path.join(export_dir, name),
                                 overwrite=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logging.info("compression: %s export %s: %d variables (%d values) rewritten, %d -> %d "
                 "bytes; kept float32: %s", mode, export_dir, report["variables_rewritten"],
                 report["values_rewritten"], report["size_bytes"]["full"],
                 report["size_bytes"]["compressed"],
                 [(k["variable"], k["reason"]) for k in report["kept_float32"]])
    return report


def _copy_tree(source: str, destination: str) -> None:
    """Copies a folder with tf.io.gfile (local paths or URLs on either side)."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    for base, _, files in tf.io.gfile.walk(source):
        relative = base[len(source):].lstrip("/")
        out = os.path.join(destination, relative) if relative else destination
        tf.io.gfile.makedirs(out)
        for name in files:
            tf.io.gfile.copy(os.path.join(base, name), os.path.join(out, name), overwrite=True)
