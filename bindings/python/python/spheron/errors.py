"""The exceptions of spheron: one root, :class:`SpheronError`, and one class per kind of
failure, each mapped from a kind of the Rust ``spheron_core::Error``.

=====================================  ==================================================
Rust error kind                        Python exception
=====================================  ==================================================
InvalidField, ZeroAmount,              :class:`InvalidRequestError` (``.field``, ``.reason``)
UnknownGpuModel, MalformedSpec,
Overflow, InvalidWeight
NoMatch                                :class:`NoMatchError` (``.order``, ``.rejected``)
NoMatch after failed proofs,           :class:`ChallengeFailedError` (a ``NoMatchError``)
ChallengeFailed
InsufficientFunds                      :class:`InsufficientFundsError` (``.needed``, ``.available``)
SpendCapExceeded                       :class:`SpendCapExceededError` (``.cap``, ``.committed``,
                                       ``.requested``)
Launch                                 :class:`LaunchError`
Matcher                                :class:`MatcherError` (``__cause__``: what ``rank`` raised)
LeaseClosed                            :class:`LeaseClosedError` (``.lease``)
Prover                                 :class:`ProverError`
Backend                                :class:`BackendError` (``.backend``)
Timeout                                :class:`StepTimeoutError` (``.step``, ``.after_ms``)
anything else                          :class:`MarketplaceError`
=====================================  ==================================================

Raised by the bindings themselves: :class:`WaitTimeoutError` (``Lease.wait(timeout=...)``)
and :class:`UnsupportedError` (a method the marketplace at hand does not have, such as
``ledger_balanced`` on a network).
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, List, Optional

if TYPE_CHECKING:
    from ._native import Skipped

__all__ = [
    "SpheronError",
    "InvalidRequestError",
    "NoMatchError",
    "ChallengeFailedError",
    "InsufficientFundsError",
    "SpendCapExceededError",
    "LaunchError",
    "MatcherError",
    "LeaseClosedError",
    "ProverError",
    "BackendError",
    "MarketplaceError",
    "WaitTimeoutError",
    "StepTimeoutError",
    "UnsupportedError",
    "UnclosedLeaseWarning",
]


class SpheronError(Exception):
    """The root of every error spheron raises."""


class InvalidRequestError(SpheronError, ValueError):
    """A request, spec or argument holds a bad value; ``field`` names it."""

    def __init__(self, message: str, *, field: str, reason: str = "") -> None:
        super().__init__(message)
        self.field: str = field
        self.reason: str = reason


class NoMatchError(SpheronError):
    """No provider can serve the order. ``rejected`` lists every provider considered and
    why it was skipped, so the failure is never opaque."""

    def __init__(
        self, message: str, *, order: Optional[int] = None, rejected: Optional[List[Skipped]] = None
    ) -> None:
        super().__init__(message)
        self.order: Optional[int] = order
        self.rejected: List[Skipped] = list(rejected or [])

    def reasons(self) -> dict[str, str]:
        """Provider name (or address) → why it was skipped."""
        return {(s.provider_name or s.provider): s.reason for s in self.rejected}


class ChallengeFailedError(NoMatchError):
    """The providers that could serve the order failed their proof-of-GPU challenge
    (they were penalised); ``failed`` lists them."""

    @property
    def failed(self) -> List[Skipped]:
        """The providers dropped for failing proof-of-GPU."""
        return [s for s in self.rejected if s.kind == "challenge_failed"]


class InsufficientFundsError(SpheronError):
    """The tenant's available balance does not cover the budget to lock."""

    def __init__(
        self, message: str, *, needed: Optional[Decimal] = None, available: Optional[Decimal] = None
    ) -> None:
        super().__init__(message)
        self.needed: Optional[Decimal] = needed
        self.available: Optional[Decimal] = available


class SpendCapExceededError(SpheronError):
    """The rent would take the marketplace's committed spend past its ``spend_cap``:
    ``committed`` (locked by running leases, paid by settled ones) plus ``requested`` (what
    this rent would lock) is more than ``cap``. Nothing was published or locked."""

    def __init__(
        self,
        message: str,
        *,
        cap: Optional[Decimal] = None,
        committed: Optional[Decimal] = None,
        requested: Optional[Decimal] = None,
    ) -> None:
        super().__init__(message)
        self.cap: Optional[Decimal] = cap
        self.committed: Optional[Decimal] = committed
        self.requested: Optional[Decimal] = requested


class LaunchError(SpheronError):
    """The workload could not be launched (the budget was released in full)."""


class MatcherError(SpheronError):
    """The matcher failed; for a Python matcher, ``__cause__`` is what ``rank`` raised."""


class LeaseClosedError(SpheronError):
    """The lease has already closed."""

    def __init__(self, message: str, *, lease: Optional[int] = None) -> None:
        super().__init__(message)
        self.lease: Optional[int] = lease


class ProverError(SpheronError):
    """A provider's prover failed to answer."""


class BackendError(SpheronError):
    """A backend (chain RPC, Kubernetes API) failed."""

    def __init__(self, message: str, *, backend: str = "") -> None:
        super().__init__(message)
        self.backend: str = backend


class MarketplaceError(SpheronError):
    """Any other marketplace failure (illegal lease transition, unknown order, shutdown)."""


class WaitTimeoutError(SpheronError, TimeoutError):
    """``Lease.wait(timeout=...)`` ran out of time; the lease still runs."""

    def __init__(self, message: str, *, lease: Optional[int] = None) -> None:
        super().__init__(message)
        self.lease: Optional[int] = lease


class StepTimeoutError(SpheronError, TimeoutError):
    """A step of renting on a network (``match``, ``challenge``, ``manifest``, ``launch``)
    did not finish in time; ``step`` names it and ``after_ms`` is the limit. Whatever the
    step had locked was released."""

    def __init__(self, message: str, *, step: str = "", after_ms: Optional[int] = None) -> None:
        super().__init__(message)
        self.step: str = step
        self.after_ms: Optional[int] = after_ms


class UnsupportedError(SpheronError):
    """The method exists on the other kind of marketplace only (``method``; ``backend`` is
    this one's kind: ``local`` or ``network``). ``ledger_balanced`` audits the embedded
    escrow; a network's escrow is the chain's contract."""

    def __init__(self, message: str, *, method: str = "", backend: str = "") -> None:
        super().__init__(message)
        self.method: str = method
        self.backend: str = backend


class UnclosedLeaseWarning(UserWarning):
    """A ``Lease`` object was collected while its lease was still open: spheron stops and
    settles it (and every lease still open at interpreter exit). Use ``with market.rent(...)
    as lease:`` or call ``lease.stop()`` to close it yourself."""
