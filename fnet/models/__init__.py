"""The model zoo: the ready networks, each one composition, and ONE registry of them.

One module per family: :mod:`~fnet.models.mlp`, :mod:`~fnet.models.cnn` (the ready CNNs),
:mod:`~fnet.models.char_lm` (recurrent character models), :mod:`~fnet.models.gpt` (a
transformer), and :mod:`~fnet.models.registry` (the table and building by name or configuration).

:data:`MODELS` maps a name to its :class:`Model`: what it is, its default widths and dropout, how
its layers are laid out, and its data presets (the ``fnet train`` defaults per data set), so that
the command and the library read one table:

>>> import fnet
>>> sorted(fnet.models.MODELS)
['deep_convnet', 'gpt', 'gru', 'lstm', 'mlp', 'rnn', 'simple_convnet', 'small_cnn', 'three_layer_convnet']
>>> net = fnet.mlp(784, [100, 100], 10, dropout=0.1)                  # cs231n's FullyConnectedNet
>>> fnet.nets.num_params(net)                                          # 784*100+100 + 100*100+100 + 100*10+10
89610
>>> fnet.nets.num_params(fnet.models.cnn("small_cnn", (1, 28, 28), 10))  # a ready CNN by name
421834
>>> net = fnet.models.build("deep_convnet", (1, 28, 28), 10)          # any model by name
>>> fnet.models.from_config(net.config).config == net.config          # rebuilt from its config
True
>>> net = fnet.models.char_lm(65, cell="lstm", hidden=512)            # a character language model
>>> net.input_shape, net.output_shape                                  # token ids (T,) -> scores (T, V)
((128,), (128, 65))
>>> fnet.nets.num_params(fnet.models.gpt(65, context=64, layers=4, heads=4, width=128))   # nanoGPT's CPU recipe
818241

``mlp``'s parameters are the composition's tree. Its layers are named ``dense1``, ``batchnorm1``
(or ``layernorm1``), ..., so the cs231n names map as::

    W{i}, b{i}             -> params["dense{i}"]["W"], params["dense{i}"]["b"]
    gamma{i}, beta{i}      -> params["batchnorm{i}"]["gamma"], ...  (or "layernorm{i}")
    running_mean/var{i}    -> state["batchnorm{i}"].mean, state["batchnorm{i}"].var

Names: ``"small_cnn"`` was called ``"cnn"`` (the name of the function :func:`cnn` too); the old
name is still accepted (:data:`ALIASES`), so that configurations and run folders saved before the
rename load, and a CNN's dense width, once its ``hidden`` field, is ``dense_width``.
"""

from __future__ import annotations

from fnet.models.char_lm import CELLS, CharLMConfig, char_lm, char_lm_module, describe_char_lm
from fnet.models.cnn import ALIASES, ARCHITECTURES, CNNConfig, cnn, cnn_module, describe_cnn
from fnet.models.gpt import GPTConfig, block, describe_gpt, gpt, gpt_module
from fnet.models.mlp import NORMS, MLPConfig, describe, mlp, mlp_module
from fnet.models.registry import (MODELS, Model, build, canonical_name, from_config, preset, upgrade_config,
                                  upgrade_run_options)

__all__ = ["ALIASES", "ARCHITECTURES", "CELLS", "CNNConfig", "CharLMConfig", "GPTConfig", "MLPConfig", "MODELS", "Model",
           "NORMS", "block", "build", "canonical_name", "char_lm", "char_lm_module", "cnn", "cnn_module", "describe",
           "describe_char_lm", "describe_cnn", "describe_gpt", "from_config", "gpt", "gpt_module", "mlp",
           "mlp_module", "preset", "upgrade_config", "upgrade_run_options"]
