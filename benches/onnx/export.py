"""Build the Penumbra U-Net as an ONNX graph from card.json and model.safetensors, then time it
with onnxruntime and print one JSON line.

The graph is written node by node with onnx.helper, with no PyTorch, and mirrors
crates/model/src/unet.rs:
- Each block computes conv1, norm1, ReLU, conv2, norm2, then adds the input (or its 1x1
  projection when the channel count changes) in the residual variant, then a final ReLU.
- Group normalization uses the largest divisor of the channel count that is not above the
  requested groups, with eps 1e-5 and biased variance, as candle-nn's GroupNorm does. It is
  built from Reshape, InstanceNormalization and a per-channel scale and shift, which every
  onnxruntime version runs.
- The encoder max-pools by 2 after each level. Each decoder level applies a 2x2 stride-2
  ConvTranspose and concatenates [skip, upsampled] on the channel axis.
- A 1x1 head convolution gives the logits.

With --check-io DIR the script first runs DIR/input.npy (written by
`penumbra bench infer --dump-io DIR`) and compares the logits with DIR/output.npy. It exits with
status 1 when the maximum absolute difference exceeds the tolerance, because a timing of a
different function would mean nothing.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import load_file

# Relative tolerance on the logits: max |ours - onnxruntime| <= TOLERANCE * max(1, max |ours|).
# Both sides compute in f32 with different summation orders. On the shipped model the
# difference was 7e-7 relative; a swapped concatenation gave 1.0 relative.
TOLERANCE = 1e-4

EPS = 1e-5
SIZE = 256


class GraphBuilder:
    """Collects nodes and initializers, naming each intermediate value uniquely."""

    def __init__(self, weights):
        self.weights = weights
        self.nodes = []
        self.initializers = []
        self.used = set()
        self.counter = 0

    def fresh(self, prefix):
        self.counter += 1
        return f"{prefix}_{self.counter}"

    def weight(self, name):
        """Add the safetensors tensor `name` as an initializer and return its name."""
        if name not in self.used:
            self.initializers.append(numpy_helper.from_array(self.weights[name], name))
            self.used.add(name)
        return name

    def constant(self, name, array):
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def node(self, op, inputs, **attributes):
        output = self.fresh(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [output], **attributes))
        return output

    def conv(self, x, prefix, kernel):
        pads = [kernel // 2] * 4
        return self.node(
            "Conv",
            [x, self.weight(f"{prefix}.weight"), self.weight(f"{prefix}.bias")],
            kernel_shape=[kernel, kernel],
            pads=pads,
        )

    def conv_transpose(self, x, prefix):
        return self.node(
            "ConvTranspose",
            [x, self.weight(f"{prefix}.weight"), self.weight(f"{prefix}.bias")],
            kernel_shape=[2, 2],
            strides=[2, 2],
        )

    def group_norm(self, x, prefix, channels, groups):
        """Normalize each of `groups` channel groups over (channels / groups, h, w)."""
        grouped = self.node("Reshape", [x, self.constant(self.fresh("shape"), np.array([0, groups, -1], np.int64))])
        ones = self.constant(self.fresh("ones"), np.ones(groups, np.float32))
        zeros = self.constant(self.fresh("zeros"), np.zeros(groups, np.float32))
        normed = self.node("InstanceNormalization", [grouped, ones, zeros], epsilon=EPS)
        shape = self.node("Shape", [x])
        restored = self.node("Reshape", [normed, shape])

        # The scale and shift are stored as (channels,) and broadcast as (channels, 1, 1).
        self.used.update({f"{prefix}.weight", f"{prefix}.bias"})
        scale = self.weights[f"{prefix}.weight"].reshape(channels, 1, 1)
        shift = self.weights[f"{prefix}.bias"].reshape(channels, 1, 1)
        scaled = self.node("Mul", [restored, self.constant(f"{prefix}.weight_c11", scale)])
        return self.node("Add", [scaled, self.constant(f"{prefix}.bias_c11", shift)])


def norm_groups(norm, channels):
    """Return the group count candle uses for `channels`, or None without normalization."""
    kind = norm["kind"]
    if kind == "none":
        return None
    if kind == "instance":
        return channels
    requested = min(norm["groups"], channels)
    return next(g for g in range(requested, 0, -1) if channels % g == 0)


def block(graph, x, prefix, in_channels, out_channels, architecture):
    groups = norm_groups(architecture["norm"], out_channels)

    h = graph.conv(x, f"{prefix}.conv1", 3)
    if groups is not None:
        h = graph.group_norm(h, f"{prefix}.norm1", out_channels, groups)
    h = graph.node("Relu", [h])
    h = graph.conv(h, f"{prefix}.conv2", 3)
    if groups is not None:
        h = graph.group_norm(h, f"{prefix}.norm2", out_channels, groups)

    if architecture["residual"]:
        skip = x if in_channels == out_channels else graph.conv(x, f"{prefix}.proj", 1)
        h = graph.node("Add", [h, skip])
    return graph.node("Relu", [h])


def build_model(card, weights):
    architecture = card["architecture"]
    depth = architecture["depth"]
    width = [architecture["base_width"] << level for level in range(depth + 1)]
    graph = GraphBuilder(weights)

    h = "input"
    channels = architecture["in_channels"]
    skips = []
    for level in range(depth):
        features = block(graph, h, f"enc{level + 1}", channels, width[level], architecture)
        skips.append(features)
        h = graph.node("MaxPool", [features], kernel_shape=[2, 2], strides=[2, 2])
        channels = width[level]
    h = block(graph, h, "bottleneck", channels, width[depth], architecture)

    for level in reversed(range(depth)):
        upsampled = graph.conv_transpose(h, f"up{level + 1}")
        joined = graph.node("Concat", [skips[level], upsampled], axis=1)
        h = block(graph, joined, f"dec{level + 1}", 2 * width[level], width[level], architecture)
    logits = graph.conv(h, "head", 1)
    graph.nodes[-1].output[0] = "logits"

    unused = sorted(set(weights) - graph.used)
    if unused:
        raise SystemExit(f"export.py: tensors {unused} are not used by the graph; the architecture differs from the card")

    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", architecture["in_channels"], SIZE, SIZE])]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", architecture["classes"], SIZE, SIZE])]
    onnx_graph = helper.make_graph(graph.nodes, "penumbra_unet", inputs, outputs, graph.initializers)
    model = helper.make_model(onnx_graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def session(model, threads):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def check_agreement(sess, io_dir):
    """Run the dumped input and compare with the dumped logits. Return the max abs difference."""
    x = np.load(io_dir / "input.npy")
    expected = np.load(io_dir / "output.npy")
    (actual,) = sess.run(["logits"], {"input": x})
    if actual.shape != expected.shape:
        raise SystemExit(f"export.py: onnxruntime logits have shape {actual.shape}, ours {expected.shape}")
    difference = float(np.max(np.abs(actual - expected)))
    limit = TOLERANCE * max(1.0, float(np.max(np.abs(expected))))
    return difference, limit


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model_dir", type=Path, help="folder with card.json and model.safetensors")
    parser.add_argument("--batch", type=int, default=1, help="slices per forward pass")
    parser.add_argument("--reps", type=int, default=10, help="timed forward passes after 2 warm-up passes")
    parser.add_argument("--check-io", type=Path, help="folder with input.npy and output.npy from `penumbra bench infer --dump-io`")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    parser.add_argument("--save", type=Path, help="also write the ONNX model to this file")
    args = parser.parse_args()
    if args.batch < 1 or args.reps < 1 or args.threads < 1:
        raise SystemExit(f"export.py: --batch, --reps and --threads must be at least 1, got {args.batch}, {args.reps} and {args.threads}")

    card = json.loads((args.model_dir / "card.json").read_text())
    weights = load_file(str(args.model_dir / "model.safetensors"))
    model = build_model(card, weights)
    if args.save:
        onnx.save(model, str(args.save))
    sess = session(model, args.threads)

    result = {"model": str(args.model_dir), "base_width": card["architecture"]["base_width"], "depth": card["architecture"]["depth"]}
    if args.check_io:
        difference, limit = check_agreement(sess, args.check_io)
        result["max_abs_diff"] = difference
        result["tolerance"] = limit
        if not difference <= limit:
            print(json.dumps(result), flush=True)
            print(f"export.py: onnxruntime and penumbra logits differ by {difference:.3g}, above the tolerance {limit:.3g}", file=sys.stderr)
            sys.exit(1)

    rng = np.random.default_rng(1)
    x = rng.standard_normal((args.batch, card["architecture"]["in_channels"], SIZE, SIZE), dtype=np.float32)
    for _ in range(2):
        sess.run(["logits"], {"input": x})
    pass_ms = []
    for _ in range(args.reps):
        start = time.perf_counter()
        sess.run(["logits"], {"input": x})
        pass_ms.append((time.perf_counter() - start) * 1e3)

    result.update(
        {
            "batch": args.batch,
            "size": SIZE,
            "kernels": f"onnxruntime {ort.__version__}",
            "threads": args.threads,
            "ms_per_slice": statistics.median(pass_ms) / args.batch,
            "ms_per_slice_min": min(pass_ms) / args.batch,
            "reps": args.reps,
        }
    )
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
