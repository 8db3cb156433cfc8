"""spheron: rent GPUs on a decentralized compute marketplace from a Python script.

.. code-block:: python

    import spheron

    market = spheron.Marketplace.local(funds="100")
    request = spheron.GpuRequest("H100", count=1, hours=1, max_price_per_hour="2.50",
                                 region="eu-west")
    with market.rent(request, command="python train.py") as lease:
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

A lease not closed with ``with`` or ``stop()`` is stopped and settled when its ``Lease``
object is collected (with an :class:`UnclosedLeaseWarning`) or, at the latest, when the
interpreter exits.
"""

from __future__ import annotations

import atexit
import os
import shlex
import sys
from dataclasses import dataclass, field
from decimal import Decimal
from os import PathLike
from typing import Any, Dict, Iterable, List, Mapping, Optional, Protocol, Sequence, Tuple, Union


from . import _native
from ._native import (
    Balance,
    Bid,
    Endpoint,
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
    Quote,
    Resume,
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
    SpendCapExceededError,
    StepTimeoutError,
    UnclosedLeaseWarning,
    UnsupportedError,
    WaitTimeoutError,
)

__all__ = [
    "Marketplace",
    "GpuRequest",
    "Lease",
    "LeaseReport",
    "Resume",
    "LogLine",
    "LogIterator",
    "Endpoint",
    "EventIterator",
    "ProgressEvent",
    "ProgressDisplay",
    "Progress",
    "ProofResult",
    "ScoreItem",
    "Skipped",
    "Balance",
    "ProviderInfo",
    "Quote",
    "Order",
    "Bid",
    "Matcher",
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
    "Command",
    "Workload",
    "torchrun",
    "__version__",
]

Amount = Union[str, int, float, Decimal]
RankItem = Union[Bid, Tuple[Bid, float], str]
#: A workload's command: a shell-like string (split with :func:`shlex.split`, no shell
#: runs it) or a sequence of arguments.
Command = Union[str, Sequence[Union[str, "PathLike[str]"]]]


def _command(command: Command) -> List[str]:
    """The argument list of ``command``; never splits a string into characters."""
    if isinstance(command, str):
        try:
            args = shlex.split(command)
        except ValueError as e:
            raise InvalidRequestError(
                f"invalid `command`: {e} in {command!r}", field="command", reason=str(e)
            ) from None
    elif isinstance(command, (bytes, bytearray)):
        raise TypeError("command must be a str or a sequence of str, not bytes")
    else:
        args = []
        for a in command:
            if isinstance(a, str):
                args.append(a)
            elif isinstance(a, PathLike):
                args.append(os.fspath(a))
            else:
                raise TypeError(f"command arguments must be str, not {type(a).__name__}: {a!r}")
    if not args:
        raise InvalidRequestError(
            "invalid `command`: it is empty", field="command", reason="a command is required"
        )
    return args


@dataclass(frozen=True)
class Workload:
    """A command to run with its environment, for :meth:`Marketplace.rent`'s second
    argument; :func:`torchrun` builds one. ``gpus``, when set, is how many GPUs it drives:
    the request must rent exactly that many."""

    command: List[str]
    env: Dict[str, str] = field(default_factory=dict)
    gpus: Optional[int] = None


def torchrun(
    script: Union[str, "PathLike[str]"],
    *args: Union[str, "PathLike[str]"],
    gpus: int,
    master_port: Optional[int] = None,
    master_addr: str = "127.0.0.1",
    program: Command = "torchrun",
    env: Optional[Mapping[str, str]] = None,
) -> Workload:
    """A PyTorch distributed training launch: ``torchrun --nnodes=1 --node_rank=0
    --nproc_per_node=GPUS --master_addr=A --master_port=P SCRIPT ARGS...`` (one worker per
    GPU), with ``MASTER_ADDR``, ``MASTER_PORT``, ``WORLD_SIZE``, ``NPROC_PER_NODE``,
    ``NNODES`` and ``NODE_RANK`` in its environment. The provider's launcher sets
    ``CUDA_VISIBLE_DEVICES`` to the lease's GPUs, so worker ``LOCAL_RANK`` *i* drives the
    lease's *i*-th GPU. ``master_port`` defaults to a random port in 29500..39499;
    ``program`` replaces ``torchrun`` (e.g. ``"python3 -m torch.distributed.run"``).

    .. code-block:: python

        request = spheron.GpuRequest("h100", count=8, hours=2, max_price_per_hour="3")
        with market.rent(request, spheron.torchrun("train.py", "--epochs=3", gpus=8)) as lease:
            lease.wait()
    """
    command, rendezvous = _native.torchrun_workload(
        os.fspath(script),
        gpus,
        _command([os.fspath(a) for a in args]) if args else [],
        master_addr=master_addr,
        master_port=master_port,
        program=_command(program),
    )
    extra = _strings("env", env) or {}
    return Workload(command=command, env={**rendezvous, **extra}, gpus=gpus)


def _ports(ports: Optional[Sequence[int]]) -> Optional[List[int]]:
    """``ports`` as a list of ints (a bool or a non-int is refused)."""
    if ports is None:
        return None
    if isinstance(ports, (str, bytes)) or not all(
        isinstance(p, int) and not isinstance(p, bool) for p in ports
    ):
        raise InvalidRequestError(
            "invalid `ports`: expected a list of port numbers (ints)",
            field="ports",
            reason="expected a list of port numbers (ints)",
        )
    return list(ports)


def _workload(
    request: GpuRequest,
    workload: Optional[Workload],
    command: Optional[Command],
    env: Optional[Mapping[str, str]],
) -> Tuple[List[str], Optional[Dict[str, str]]]:
    """The command and environment of a rent given a ``Workload`` or a ``command``."""
    if workload is None:
        if command is None:
            raise InvalidRequestError(
                "invalid `command`: give a command or a Workload", field="command", reason="missing"
            )
        return _command(command), _strings("env", env)
    if command is not None:
        raise InvalidRequestError(
            "invalid `command`: give either a Workload or a command, not both",
            field="command",
            reason="both a Workload and a command",
        )
    if workload.gpus is not None and workload.gpus != request.count:
        raise InvalidRequestError(
            f"invalid `gpus`: the workload drives {workload.gpus} GPUs but the request rents "
            f"{request.count}",
            field="gpus",
            reason=f"{workload.gpus} != count {request.count}",
        )
    merged = dict(workload.env)
    merged.update(_strings("env", env) or {})
    return _command(workload.command), merged


def _strings(name: str, values: Optional[Mapping[str, str]]) -> Optional[Dict[str, str]]:
    if values is None:
        return None
    out: Dict[str, str] = {}
    for k, v in values.items():
        if not isinstance(k, str) or not isinstance(v, str):
            # Never echo a value: it may be a secret.
            raise TypeError(f"{name} must map str to str; `{k!s}` does not")
        out[k] = v
    return out


def _settle_at_exit() -> None:
    """Stops and settles the leases still open when the interpreter exits."""
    ids = _native.settle_open_leases()
    if ids:
        sys.stderr.write(
            f"spheron: stopped and settled lease(s) {', '.join(map(str, ids))} left open at exit\n"
        )
        sys.stderr.flush()


atexit.register(_settle_at_exit)


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


def _limited(
    request: GpuRequest, max_spend: Optional[Amount], idle_timeout: Union[str, float, None]
) -> GpuRequest:
    """``request`` with the rent's cost-control keywords applied."""
    if max_spend is None and idle_timeout is None:
        return request
    return request.with_limits(max_spend=max_spend, idle_timeout=idle_timeout)


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
        spend_cap: Optional[Amount] = None,
    ) -> "Marketplace":
        """The embedded marketplace. ``funds`` (USD) are deposited for the tenant; ``seed``
        makes matching and challenges reproducible; ``bid_window`` (seconds) is how long
        orders collect bids; ``max_attempts`` how many providers are challenged before
        giving up; ``matcher`` replaces the default weighted matcher; ``progress`` is the
        default for :meth:`rent`; ``spend_cap`` (USD) caps what all its leases together may
        commit (see :class:`SpendCapExceededError`)."""
        native = _native.Marketplace.local(
            funds,
            seed=seed,
            bid_window=bid_window,
            max_attempts=max_attempts,
            matcher=matcher,
            spend_cap=spend_cap,
        )
        return cls(native, progress)

    @classmethod
    def connect(
        cls,
        network: Union[str, "PathLike[str]", None] = None,
        key: Optional[str] = None,
        *,
        progress: Progress = None,
        spend_cap: Optional[Amount] = None,
    ) -> "Marketplace":
        """A tenant client of the network described by the ``network.json`` at ``network``
        (default: ``$SPHERON_NETWORK``), signing with the 0x-hex private ``key`` (default:
        ``$SPHERON_KEY``, else the network file's first tenant account, which ``spheron
        devnet`` funds). Money is in the network's payment token (USDS on a devnet).

        Raises :class:`InvalidRequestError` (``field="network"``, naming the file) for a
        missing or unreadable network file, (``field="key"``) for a bad key, and
        :class:`BackendError` when the chain cannot be reached. ``spend_cap`` caps what all
        leases rented through this object together may commit."""
        native = _native.Marketplace.connect(network, key, spend_cap=spend_cap)
        return cls(native, progress)

    def rent(
        self,
        request: GpuRequest,
        workload: Optional[Workload] = None,
        *,
        command: Optional[Command] = None,
        image: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        secrets: Optional[Mapping[str, str]] = None,
        workdir: Union[str, "PathLike[str]", None] = None,
        progress: Progress = None,
        max_spend: Optional[Amount] = None,
        idle_timeout: Union[str, float, None] = None,
        ports: Optional[Sequence[int]] = None,
        checkpoint: Optional[str] = None,
        checkpoint_every: float = 30,
        max_resumes: int = 2,
        checkpoint_dir: Union[str, "PathLike[str]", None] = None,
    ) -> Lease:
        """Rents GPUs for ``request`` and starts ``command`` on them: publish, bids, rank,
        proof-of-GPU challenge (failing over with reasons), escrow lock, launch. Returns the
        running :class:`Lease` (use it as a context manager so it always settles).

        ``command`` is a string (split like a shell would, with :func:`shlex.split`; no
        shell runs it) or a list of arguments; or give a :class:`Workload` instead (such as
        :func:`torchrun`'s, whose GPU count must be the request's). ``env`` and ``secrets`` are environment
        variables of the workload; secrets are never logged, shown in a ``repr`` or
        written into the signed manifest. ``image`` is a container image, for providers
        that run containers: the local launcher (the embedded marketplace's, a devnet's)
        refuses it with :class:`InvalidRequestError` (``field="image"``).

        ``workdir`` is a directory sent with the workload and unpacked as its working
        directory (``.git``, ``.venv`` and ``__pycache__`` left out; at most 1 GiB, else
        :class:`InvalidRequestError` with ``field="workdir"``); on a network it is uploaded
        to the provider's gateway and its hash signed in the manifest. Files the workload
        writes, in ``outputs/`` (``$SPHERON_OUTPUTS``) or elsewhere in its working
        directory, come back with ``lease.download("outputs/model.ckpt", dest)`` until the
        lease has ended plus a grace period (10 minutes).

        Cost control: ``max_spend`` (USD) caps what this lease may ever cost (only that much
        is locked; the lease closes as ``spend cap reached`` when it is used) and
        ``idle_timeout`` (``"10m"`` or seconds) stops it, as ``idle (...)``, once the workload
        wrote no output and its GPUs were idle that long (where GPU utilisation cannot be
        measured, as with simulated GPUs, only output counts); the tenant pays until the
        stop. Both override the request's own ``max_spend`` / ``idle_timeout``.

        ``ports`` are ports the workload serves (an inference server, a notebook): the
        provider gives the workload a free port of its own for each (``$PORT`` for the first,
        ``$SPHERON_PORT_<port>`` for each; listen on ``127.0.0.1``) and ``lease.endpoint(port)``
        says how to reach it: on a network, the provider gateway's URL with a bearer token
        in ``headers``; embedded, the workload's loopback address. At most 16, each 1-65535,
        no duplicates (else :class:`InvalidRequestError` with ``field="ports"``).

        ``checkpoint`` (network mode) names a file the workload writes in ``outputs/``, such
        as ``"outputs/ckpt"``, always whole: written to a temporary name and renamed over
        it. The tenant downloads it every ``checkpoint_every`` seconds while the lease runs
        (only when it changed) into ``checkpoint_dir`` (default: a fresh temporary
        directory). When the provider is lost during the lease, the lease is settled and
        the order published again without that provider, for the time left, with the last
        checkpoint at the same path in the working directory and ``$SPHERON_RESUME_FROM``
        naming it; at most ``max_resumes`` times. The :class:`Lease` follows the new lease;
        ``report.resumed`` lists the failovers and ``report.total_cost`` sums the leases.
        The embedded marketplace refuses a checkpoint (:class:`InvalidRequestError`,
        ``field="checkpoint"``).

        Raises :class:`NoMatchError` (every provider and why), :class:`ChallengeFailedError`,
        :class:`InsufficientFundsError`, :class:`SpendCapExceededError`, :class:`LaunchError`,
        :class:`MatcherError`, :class:`InvalidRequestError`."""
        args, environment = _workload(request, workload, command, env)
        request = _limited(request, max_spend, idle_timeout)
        return self._native.rent(
            request,
            command=args,
            image=image,
            env=environment,
            secrets=_strings("secrets", secrets),
            workdir=workdir,
            on_event=self._callback(progress),
            ports=_ports(ports),
            checkpoint=checkpoint,
            checkpoint_every=checkpoint_every,
            max_resumes=max_resumes,
            checkpoint_dir=checkpoint_dir,
        )

    async def rent_async(
        self,
        request: GpuRequest,
        workload: Optional[Workload] = None,
        *,
        command: Optional[Command] = None,
        image: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        secrets: Optional[Mapping[str, str]] = None,
        workdir: Union[str, "PathLike[str]", None] = None,
        progress: Progress = None,
        max_spend: Optional[Amount] = None,
        idle_timeout: Union[str, float, None] = None,
        ports: Optional[Sequence[int]] = None,
        checkpoint: Optional[str] = None,
        checkpoint_every: float = 30,
        max_resumes: int = 2,
        checkpoint_dir: Union[str, "PathLike[str]", None] = None,
    ) -> Lease:
        """The awaitable twin of :meth:`rent`."""
        args, environment = _workload(request, workload, command, env)
        request = _limited(request, max_spend, idle_timeout)
        return await self._native.rent_async(
            request,
            command=args,
            image=image,
            env=environment,
            secrets=_strings("secrets", secrets),
            workdir=workdir,
            on_event=self._callback(progress),
            ports=_ports(ports),
            checkpoint=checkpoint,
            checkpoint_every=checkpoint_every,
            max_resumes=max_resumes,
            checkpoint_dir=checkpoint_dir,
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

    def quote(self, request: GpuRequest) -> List[Quote]:
        """What each provider would bid on ``request`` now, cheapest first, before renting:
        nothing is published or locked. Each :class:`Quote` has the provider, its region, the
        model it would offer, ``price_per_hour`` and ``cost`` (the whole request at that
        price: the most the rent would pay). Providers that the request's filters exclude
        (regions, tier, allow and deny lists) or that would not bid (price above the ceiling,
        no room) are left out. The matcher then ranks the bids (price is one of its
        criteria), so the rent may choose another than the cheapest. On a network every
        registered provider's gateway is asked (over its pinned certificate) what it would
        bid now; those that do not answer within 5 s are left out."""
        return self._native.quote(request)

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
