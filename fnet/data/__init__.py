"""Data sets, splits and preprocessing.

Every loader returns a :class:`Dataset` of NumPy arrays (the trainer moves them to the device):

- features ``x_*``: float32, shape (N, D) (or (N, 1, H, W) for images with ``flatten=False``);
- classification labels ``y_*``: int32, shape (N,), values in [0, num_classes);
- regression targets ``y_*``: float32, shape (N, 1), and ``num_classes == 0``.

Data sets (``load(name)`` dispatches on the name, ``KNOWN_DATASETS`` lists them):

- ``digits``: scikit-learn's 8x8 digits, shipped inside the package (no download), the default;
- ``mnist``, ``fashion-mnist``: the IDX files, looked up in ``data_dir``, then ``$FNET_DATA``, then
  ``~/.cache/fnet/<name>/`` (see :func:`find_files`); :func:`download` fetches them;
- synthetic sets from the curriculum: ``sin``, ``spiral``, ``planar``, ``linear``.

Text sets are sequences of characters, not samples and labels: ``load_text(name)`` returns a
:class:`TextDataset` (int32 character ids split 90/10, the vocabulary, encode/decode);
``shakespeare`` (tiny-shakespeare) is bundled gzipped and used from ``data_dir`` or ``$FNET_DATA``
when present there. :func:`random_windows` and :func:`contiguous_windows` cut it into batches.

Splits are seeded and reproducible: the test set is taken first (``test_fraction`` of all samples,
or the official test files for MNIST/Fashion-MNIST), then the validation set (``val_fraction`` of
what remains); each part keeps the samples' original relative order. Pixels are scaled to [0, 1];
``load(..., standardize=True)`` additionally standardizes every feature with training statistics.

Modules, one idea each: :mod:`~fnet.data.splits` (the :class:`Dataset` record, splitting,
standardizing, one-hot labels), :mod:`~fnet.data.idx` (the IDX format, finding the files, verified
downloads), :mod:`~fnet.data.images` (the image sets and :func:`load`), :mod:`~fnet.data.synthetic`
(the generated sets), :mod:`~fnet.data.text` (character-level text and its batches). The names
below are re-exported here.
"""

from fnet.data.idx import (
    IDX_FILES,
    MIRRORS,
    SHA256,
    ChecksumError,
    DatasetNotFoundError,
    DownloadError,
    default_cache_dir,
    find_files,
    read_idx,
)
from fnet.data.images import (
    IMAGE_DATASETS,
    KNOWN_DATASETS,
    canonical_name,
    digits,
    download,
    fashion_mnist,
    load,
    mnist,
)
from fnet.data.splits import (
    Dataset,
    check_dataset,
    one_hot,
    standardize,
    standardize_dataset,
    train_val_test_split,
)
from fnet.data.synthetic import linear, planar, sin, spiral
from fnet.data.text import (
    SHAKESPEARE_SHA256,
    TEXT_DATASETS,
    TextDataset,
    char_vocab,
    contiguous_windows,
    decode,
    encode,
    load_text,
    random_windows,
    shakespeare,
    text_dataset_name,
)

__all__ = [
    "IDX_FILES", "IMAGE_DATASETS", "KNOWN_DATASETS", "MIRRORS", "SHA256", "SHAKESPEARE_SHA256", "TEXT_DATASETS",
    "ChecksumError", "Dataset", "DatasetNotFoundError", "DownloadError", "TextDataset", "canonical_name", "char_vocab",
    "check_dataset", "contiguous_windows", "decode", "default_cache_dir", "digits", "download", "encode",
    "fashion_mnist", "find_files", "linear", "load", "load_text", "mnist", "one_hot", "planar", "random_windows",
    "read_idx", "shakespeare", "sin", "spiral", "standardize", "standardize_dataset", "text_dataset_name", "train_val_test_split",
]
