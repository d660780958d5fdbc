//! candle custom ops wrapping the kernels: one forward op per convolution kind and one
//! gradient op per (kind, operand) pair that the forward op's `bwd` calls.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

use crate::error::KernelError;
use crate::layout::ConvShape;
use crate::matmul::{KernelPath, MatRef};
use crate::reduce::{ChannelSum, ReluMask};
use crate::{conv1x1, conv3x3, transpose, Activation};

/// Convolution computed by a forward op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConvKind {
    Conv3x3,
    Conv1x1,
    Transpose2x2,
}

impl ConvKind {
    /// Reads the convolution shape from the input `(n, c_in, h, w)` and weight layouts.
    fn shape(self, x: &Layout, w: &Layout) -> Result<ConvShape> {
        let (batch, c_in, height, width) = x.shape().dims4()?;
        let c_out = match self {
            ConvKind::Conv3x3 | ConvKind::Conv1x1 => w.shape().dims4()?.0,
            ConvKind::Transpose2x2 => w.shape().dims4()?.1,
        };
        Ok(ConvShape {
            batch,
            c_in,
            c_out,
            height,
            width,
        })
    }

    fn output_shape(self, shape: &ConvShape) -> Shape {
        let scale = if self == ConvKind::Transpose2x2 { 2 } else { 1 };
        Shape::from((
            shape.batch,
            shape.c_out,
            scale * shape.height,
            scale * shape.width,
        ))
    }
}

/// Returns the contiguous `f32` data behind a storage and layout.
pub(crate) fn contiguous_f32<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    operand: &'static str,
) -> Result<&'a [f32]> {
    let data = storage.as_slice::<f32>()?;
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => Err(KernelError::NotContiguous { operand }.into()),
    }
}

/// Forward convolution op over (input, weight, bias), with optional fused ReLU.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConvOp {
    pub kind: ConvKind,
    pub activation: Activation,
    pub path: KernelPath,
}

impl CustomOp3 for ConvOp {
    fn name(&self) -> &'static str {
        match self.kind {
            ConvKind::Conv3x3 => "penumbra-conv3x3",
            ConvKind::Conv1x1 => "penumbra-conv1x1",
            ConvKind::Transpose2x2 => "penumbra-conv-transpose2x2",
        }
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, "input")?;
        let w = contiguous_f32(s2, l2, "weight")?;
        let b = contiguous_f32(s3, l3, "bias")?;
        let shape = self.kind.shape(l1, l2)?;
        let relu = self.activation == Activation::Relu;

        let out = match self.kind {
            ConvKind::Conv3x3 => conv3x3::forward(self.path, &shape, x, w, Some(b), relu),
            ConvKind::Conv1x1 => {
                let weight = MatRef::new(w, shape.c_in, 1);
                conv1x1::forward(self.path, &shape, x, weight, Some(b), relu)
            }
            ConvKind::Transpose2x2 => transpose::forward(self.path, &shape, x, w, Some(b)),
        };
        Ok((CpuStorage::F32(out), self.kind.output_shape(&shape)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // ReLU passes the gradient only where its output is positive.
        let grad = match self.activation {
            Activation::Identity => grad_res.contiguous()?,
            Activation::Relu => grad_res
                .contiguous()?
                .apply_op2_no_bwd(&res.contiguous()?, &ReluMask)?,
        };

        // Operands outside the autograd graph (the network's input image, a bias that `apply`
        // filled with zeros) get no gradient, which skips a whole convolution for the first layer.
        let input_op = GradOp {
            kind: self.kind,
            operand: GradOperand::Input,
            path: self.path,
        };
        let weight_op = GradOp {
            kind: self.kind,
            operand: GradOperand::Weight,
            path: self.path,
        };
        let grad_x = x
            .track_op()
            .then(|| grad.apply_op2_no_bwd(w, &input_op))
            .transpose()?;
        let grad_w = w
            .track_op()
            .then(|| x.apply_op2_no_bwd(&grad, &weight_op))
            .transpose()?;
        let grad_b = b
            .track_op()
            .then(|| grad.apply_op1_no_bwd(&ChannelSum))
            .transpose()?;
        Ok((grad_x, grad_w, grad_b))
    }
}

/// Operand whose gradient a `GradOp` computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GradOperand {
    /// Arguments are (output gradient, weight).
    Input,
    /// Arguments are (forward input, output gradient).
    Weight,
}

/// Gradient of a convolution with respect to its input or weight. It has no backward pass of
/// its own, so second derivatives are not available.
#[derive(Debug, Clone, Copy)]
struct GradOp {
    kind: ConvKind,
    operand: GradOperand,
    path: KernelPath,
}

impl GradOp {
    fn input_grad(
        &self,
        grad: (&[f32], &Layout),
        w: (&[f32], &Layout),
    ) -> Result<(Vec<f32>, Shape)> {
        let (batch, c_out, out_h, out_w) = grad.1.shape().dims4()?;
        let (kernel_dim0, kernel_dim1, _, _) = w.1.shape().dims4()?;
        let c_in = if self.kind == ConvKind::Transpose2x2 {
            kernel_dim0
        } else {
            kernel_dim1
        };
        let (height, width) = match self.kind {
            ConvKind::Transpose2x2 => (out_h / 2, out_w / 2),
            _ => (out_h, out_w),
        };
        let shape = ConvShape {
            batch,
            c_in,
            c_out,
            height,
            width,
        };

        let data = match self.kind {
            ConvKind::Conv3x3 => conv3x3::input_grad(self.path, &shape, w.0, grad.0),
            ConvKind::Conv1x1 => conv1x1::input_grad(self.path, &shape, w.0, grad.0),
            ConvKind::Transpose2x2 => transpose::input_grad(self.path, &shape, w.0, grad.0),
        };
        Ok((data, Shape::from((batch, c_in, height, width))))
    }

    fn weight_grad(
        &self,
        x: (&[f32], &Layout),
        grad: (&[f32], &Layout),
    ) -> Result<(Vec<f32>, Shape)> {
        let (batch, c_in, height, width) = x.1.shape().dims4()?;
        let c_out = grad.1.shape().dims4()?.1;
        let shape = ConvShape {
            batch,
            c_in,
            c_out,
            height,
            width,
        };

        let (data, dims) = match self.kind {
            ConvKind::Conv3x3 => (
                conv3x3::weight_grad(self.path, &shape, x.0, grad.0),
                (c_out, c_in, 3, 3),
            ),
            ConvKind::Conv1x1 => (
                conv1x1::weight_grad(self.path, &shape, x.0, grad.0),
                (c_out, c_in, 1, 1),
            ),
            ConvKind::Transpose2x2 => (
                transpose::weight_grad(self.path, &shape, x.0, grad.0),
                (c_in, c_out, 2, 2),
            ),
        };
        Ok((data, Shape::from(dims)))
    }
}

impl CustomOp2 for GradOp {
    fn name(&self) -> &'static str {
        match self.operand {
            GradOperand::Input => "penumbra-conv-input-grad",
            GradOperand::Weight => "penumbra-conv-weight-grad",
        }
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (data, shape) = match self.operand {
            GradOperand::Input => {
                let grad = contiguous_f32(s1, l1, "output gradient")?;
                let w = contiguous_f32(s2, l2, "weight")?;
                self.input_grad((grad, l1), (w, l2))?
            }
            GradOperand::Weight => {
                let x = contiguous_f32(s1, l1, "input")?;
                let grad = contiguous_f32(s2, l2, "output gradient")?;
                self.weight_grad((x, l1), (grad, l2))?
            }
        };
        Ok((CpuStorage::F32(data), shape))
    }
}
