# Copyright (c) monai_bigan contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""
A narrow filter of the framework messages that a user of the bundles cannot act on.

Each rule matches one message by its exact text (a regular expression anchored at its start) and by its category
or logger, so that every other warning, including other warnings of the same modules, still shows.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterable

__all__ = ["FRAMEWORK_LOG_RECORDS", "FRAMEWORK_WARNINGS", "FrameworkMessageFilter", "filter_framework_warnings"]

# (message regex, category, module regex of the code the warning is attributed to, "" for any)
FRAMEWORK_WARNINGS: tuple[tuple[str, type[Warning], str], ...] = (
    # monai.bundle.scripts.create_workflow (MONAI >= 1.5.2): `python -m monai.bundle run ... --config_file X` and
    # every create_workflow call; the bundle's configs are this package's own, trusted by installing it
    (
        r'parsing config_file .*: any `"_target_"` value in it is resolved to an importable callable and invoked '
        r"with no allow list",
        UserWarning,
        "",
    ),
    # monai.data.image_reader.NvImgCodecPydicomReader.__init__: every LoadImage(d) builds one of each default reader,
    # and without nvImageCodec and CUDA (e.g. any CPU machine) its plugin cannot register; DICOM still loads
    (
        r"NvImgCodecPydicomReader: nvImageCodec decoder plugin did not register successfully\. "
        r"Falling back to default pydicom decoders\.",
        UserWarning,
        r"monai\.data\.image_reader$",
    ),
)

# logger name -> message regexes of its records to drop (log records, not warnings: warnings filters miss them)
FRAMEWORK_LOG_RECORDS: dict[str, tuple[str, ...]] = {
    # monai.data.nvimgcodec_pydicom_plugin.register_as_decoder_plugin, WARNING, before the warning above
    "monai.data.nvimgcodec_pydicom_plugin": (
        r"nvImageCodec is not available; skipping pydicom decoder plugin registration\.$",
    ),
}


class FrameworkMessageFilter(logging.Filter):
    """
    A ``logging.Filter`` dropping the records whose message matches one of ``patterns`` (anchored at its start).

    Args:
        patterns: regular expressions of the messages to drop.
    """

    def __init__(self, patterns: Iterable[str]) -> None:
        super().__init__()
        self.patterns = tuple(patterns)
        self._compiled = [re.compile(p) for p in self.patterns]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(p.match(message) for p in self._compiled)


def filter_framework_warnings() -> None:
    """
    Hide the framework messages listed in :py:data:`FRAMEWORK_WARNINGS` (warnings, by message, category and module)
    and :py:data:`FRAMEWORK_LOG_RECORDS` (log records, by a filter on the logger that emits them), and nothing else.
    Idempotent: calling it again adds no duplicate filter.

    The bundles call it first in their ``"initialize"`` list, before any transform is built. MONAI warns that it is
    parsing a config file (the ``"_target_"`` notice) before the config imports ``monai_bigan``, so in
    ``python -m monai.bundle run ...`` that notice comes too early for this filter; it is hidden only for configs
    parsed later in the same process. From the command line, ``python -W "ignore:parsing config_file:UserWarning"
    -m monai.bundle run ...`` (or ``PYTHONWARNINGS``) hides it.

    Example::

        import monai_bigan
        monai_bigan.utils.filter_framework_warnings()
    """
    for message, category, module in FRAMEWORK_WARNINGS:
        # filterwarnings removes an identical filter before inserting it first: no duplicates
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    for name, patterns in FRAMEWORK_LOG_RECORDS.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, FrameworkMessageFilter) and f.patterns == patterns for f in logger.filters):
            logger.addFilter(FrameworkMessageFilter(patterns))
