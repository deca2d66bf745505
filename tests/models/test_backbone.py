import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from posejax.formulations.heatmap import GaussianHeatmap
from posejax.models import PoseModel, ResNetBackbone


@pytest.mark.parametrize("output_stride", [4, 8])
def test_backbone_output_stride_and_channels(output_stride):
    bb = ResNetBackbone(output_stride=output_stride, out_channels=24, rngs=nnx.Rngs(0))
    out = jax.eval_shape(bb, jax.ShapeDtypeStruct((2, 64, 48, 3), jnp.float32))
    assert out.shape == (2, 64 // output_stride, 48 // output_stride, 24)


def test_unreachable_output_stride_is_a_clear_error():
    with pytest.raises(ValueError, match="output_stride=2 is not reachable"):
        ResNetBackbone(output_stride=2, rngs=nnx.Rngs(0))


def test_pose_model_composes_backbone_and_head_on_uint8_images():
    form = GaussianHeatmap(stride=4, input_size=(64, 48))
    bb = ResNetBackbone(output_stride=4, out_channels=32, rngs=nnx.Rngs(0))
    model = PoseModel(bb, form.make_head(32, rngs=nnx.Rngs(1)))
    out = model(jnp.zeros((1, 64, 48, 3), jnp.uint8))
    assert out["heatmaps"].shape == (1, 16, 12, 17)
