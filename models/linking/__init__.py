"""Campaign linking: find the accounts that one operator spreads a campaign over.

Three pure stages, each partitioned where its state lives (see `linker.py`):
`LinkObserver` (by account), `KeyEvidence` (by link key) and `CampaignClusters` (in one
place), chained in-process by `CampaignLinker`.
"""

from models.linking.clusters import CampaignClusters, CampaignMember
from models.linking.evidence import (
    DEFAULT_KIND_WEIGHTS,
    DEFAULT_PURITY_EXPONENTS,
    KeyEvidence,
    LinkEdge,
)
from models.linking.keys import KINDS, link_keys, onset_key
from models.linking.linker import CampaignLinker
from models.linking.observe import LinkObservation, LinkObserver
from models.linking.suspicion import ExtractionShareSuspicion

__all__ = [
    "DEFAULT_KIND_WEIGHTS",
    "DEFAULT_PURITY_EXPONENTS",
    "KINDS",
    "CampaignClusters",
    "CampaignLinker",
    "CampaignMember",
    "ExtractionShareSuspicion",
    "KeyEvidence",
    "LinkEdge",
    "LinkObservation",
    "LinkObserver",
    "link_keys",
    "onset_key",
]
