"""spheron: rent GPUs on a decentralized compute marketplace from a Python script.

.. code-block:: python

    import spheron

    market = spheron.Marketplace.local(funds="100")
    request = spheron.GpuRequest("H100", count=1, hours=1, max_price_per_hour="2.50",
                                 region="eu-west")
    with market.rent(request, command=["python", "train.py"]) as lease:
        for line in lease.logs():
            print(line)
        report = lease.wait()
    print(report.provider_name, report.cost, report.refund)

``spheron.Marketplace.connect("devnet/network.json")`` is the same API against a network of
independent provider nodes (start a local one with ``spheron devnet``): the workload runs on
the provider's side and payment is settled by the chain's escrow.

Every blocking call releases the GIL; Ctrl-C during a call that waits on a lease stops and
settles the lease before ``KeyboardInterrupt`` propagates. Each blocking call has an
``_async`` twin (``rent_async``, ``wait_async``, ``stop_async``, ``async with``,
``async for``) running the same Rust code. Money is ``decimal.Decimal`` in whole tokens
(USD on the embedded marketplace, the network's payment token such as USDS on a network),
exact to the token's base unit.
"""

from __future__ import annotations

from decimal import Decimal
from os import PathLike
from typing import Any, Iterable, List, Mapping, Optional, Protocol, Sequence, Tuple, Union


from . import _native
from ._native import (
    Balance,
    Bid,
    EventIterator,
    GpuRequest,
    Lease,
    LeaseReport,
    LogIterator,
    LogLine,
    Order,
    ProgressEvent,
    ProofResult,
    ProviderInfo,
    ScoreItem,
    Skipped,
    __version__,
)
from ._progress import Progress, ProgressDisplay, resolve
from .errors import (
    BackendError,
    ChallengeFailedError,
    InsufficientFundsError,
    InvalidRequestError,
    LaunchError,
    LeaseClosedError,
    MarketplaceError,
    MatcherError,
    NoMatchError,
    ProverError,
    SpheronError,
    StepTimeoutError,
    UnsupportedError,
    WaitTimeoutError,
)

__all__ = [
    "Marketplace",
    "GpuRequest",
    "Lease",
    "LeaseReport",
    "LogLine",
    "LogIterator",
    "EventIterator",
    "ProgressEvent",
    "ProgressDisplay",
    "Progress",
    "ProofResult",
    "ScoreItem",
    "Skipped",
    "Balance",
    "ProviderInfo",
    "Order",
    "Bid",
    "Matcher",
    "SpheronError",
    "InvalidRequestError",
    "NoMatchError",
    "ChallengeFailedError",
    "InsufficientFundsError",
    "LaunchError",
    "MatcherError",
    "LeaseClosedError",
    "ProverError",
    "BackendError",
    "MarketplaceError",
    "WaitTimeoutError",
    "StepTimeoutError",
    "UnsupportedError",
    "__version__",
]

Amount = Union[str, int, float, Decimal]
RankItem = Union[Bid, Tuple[Bid, float], str]


class Matcher(Protocol):
    """A custom matcher: ``rank`` gets the order and the bids that pass the standard filters
    (the default matcher's: deny and allow lists, model, free GPUs, price ceiling, tier,
    regions, latency; the others are in ``order.rejected`` with their reasons) and returns
    the bids it accepts, best first (a ``Bid``, a ``(Bid, score)`` pair, or a provider
    name). A matcher with a true ``wants_all_bids`` attribute gets every bid instead. Bids
    left out are skipped with the filter's reason or "not chosen by <class>"; the
    marketplace challenges the first, failing over to the next. It must be deterministic to
    be shared by operators."""

    def rank(self, order: Order, bids: List[Bid]) -> Iterable[RankItem]: ...


class Marketplace:
    """A GPU marketplace. :meth:`local` builds the embedded one: in-process market and
    escrow, a simulated fleet of twelve providers in six regions (H200 down to T4), real
    proof-of-GPU challenges (``fra-bargain`` cheats and fails), workloads run as local
    subprocesses. :meth:`connect` is a tenant client of a network of independent provider
    nodes (``spheron devnet`` starts one): orders, matching and escrow on the chain,
    proof-of-GPU and the workload through the chosen provider's gateway.

    Both have :meth:`rent` / :meth:`rent_async` returning the same :class:`Lease`,
    :meth:`events`, :meth:`balance`, :meth:`deposit`, :meth:`withdraw` and
    :meth:`providers`. :meth:`ledger_balanced` is embedded-only (it raises
    :class:`UnsupportedError` on a network); a custom ``matcher`` only exists embedded (on a
    network the operators match)."""

    def __init__(self, native: _native.Marketplace, progress: Progress = None) -> None:
        self._native = native
        self._progress = progress

    @classmethod
    def local(
        cls,
        funds: Optional[Amount] = "1000",
        *,
        seed: Optional[int] = None,
        bid_window: float = 0.2,
        max_attempts: int = 3,
        matcher: Optional[Matcher] = None,
        progress: Progress = None,
    ) -> "Marketplace":
        """The embedded marketplace. ``funds`` (USD) are deposited for the tenant; ``seed``
        makes matching and challenges reproducible; ``bid_window`` (seconds) is how long
        orders collect bids; ``max_attempts`` how many providers are challenged before
        giving up; ``matcher`` replaces the default weighted matcher; ``progress`` is the
        default for :meth:`rent`."""
        native = _native.Marketplace.local(
            funds, seed=seed, bid_window=bid_window, max_attempts=max_attempts, matcher=matcher
        )
        return cls(native, progress)

    @classmethod
    def connect(
        cls,
        network: Union[str, "PathLike[str]", None] = None,
        key: Optional[str] = None,
        *,
        progress: Progress = None,
    ) -> "Marketplace":
        """A tenant client of the network described by the ``network.json`` at ``network``
        (default: ``$SPHERON_NETWORK``), signing with the 0x-hex private ``key`` (default:
        ``$SPHERON_KEY``, else the network file's first tenant account, which ``spheron
        devnet`` funds). Money is in the network's payment token (USDS on a devnet).

        Raises :class:`InvalidRequestError` (``field="network"``, naming the file) for a
        missing or unreadable network file, (``field="key"``) for a bad key, and
        :class:`BackendError` when the chain cannot be reached."""
        native = _native.Marketplace.connect(network, key)
        return cls(native, progress)

    def rent(
        self,
        request: GpuRequest,
        *,
        command: Sequence[str],
        image: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        progress: Progress = None,
    ) -> Lease:
        """Rents GPUs for ``request`` and starts ``command`` on them: publish, bids, rank,
        proof-of-GPU challenge (failing over with reasons), escrow lock, launch. Returns the
        running :class:`Lease` (use it as a context manager so it always settles).

        Raises :class:`NoMatchError` (every provider and why), :class:`ChallengeFailedError`,
        :class:`InsufficientFundsError`, :class:`LaunchError`, :class:`MatcherError`,
        :class:`InvalidRequestError`."""
        return self._native.rent(
            request,
            command=list(command),
            image=image,
            env=dict(env) if env is not None else None,
            on_event=self._callback(progress),
        )

    async def rent_async(
        self,
        request: GpuRequest,
        *,
        command: Sequence[str],
        image: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        progress: Progress = None,
    ) -> Lease:
        """The awaitable twin of :meth:`rent`."""
        return await self._native.rent_async(
            request,
            command=list(command),
            image=image,
            env=dict(env) if env is not None else None,
            on_event=self._callback(progress),
        )

    def _callback(self, progress: Progress) -> Any:
        return resolve(progress if progress is not None else self._progress)

    def events(self) -> EventIterator:
        """Progress events of every rent from now on, for programs that draw their own
        progress: ``for e in market.events()`` or ``async for``."""
        return self._native.events()

    def balance(self) -> Balance:
        """The tenant's escrow balance."""
        return self._native.balance()

    def deposit(self, amount: Amount) -> None:
        """Deposits ``amount`` (whole tokens) into the tenant's escrow account; on a network
        from the tenant's wallet."""
        self._native.deposit(amount)

    def withdraw(self, amount: Amount) -> None:
        """Withdraws ``amount`` (whole tokens) of the available escrow balance; on a network
        back to the tenant's wallet. Raises :class:`InsufficientFundsError` when less is
        available."""
        self._native.withdraw(amount)

    def providers(self) -> List[ProviderInfo]:
        """Every provider of the marketplace (on a network: its on-chain registry)."""
        return self._native.providers()

    def ledger_balanced(self) -> bool:
        """Whether the embedded escrow ledger holds exactly what it owes. Embedded only:
        raises :class:`UnsupportedError` on a network."""
        return self._native.ledger_balanced()

    @property
    def kind(self) -> str:
        """``local`` (embedded) or ``network``."""
        return self._native.kind

    @property
    def network(self) -> Optional[str]:
        """The network file this client was connected with; ``None`` when embedded."""
        return self._native.network

    @property
    def token(self) -> str:
        """The payment token's symbol."""
        return self._native.token

    @property
    def tenant(self) -> str:
        """The tenant's address."""
        return self._native.tenant

    def __repr__(self) -> str:
        return repr(self._native)
