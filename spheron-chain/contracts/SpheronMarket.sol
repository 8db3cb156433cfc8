// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";
import {ProviderRegistry} from "./ProviderRegistry.sol";
import {SpheronOperators} from "./SpheronOperators.sol";

/// @title SpheronMarket
/// @notice Escrow and order book of the spheron GPU marketplace.
///
/// Tenants deposit any allowed ERC-20 and create orders (ids assigned here, in sequence) that
/// lock their budget (max price per GPU-hour x GPUs x duration) and record the token's fee.
/// Registered, staked providers bid at or below the ceiling inside the bid window, one bid per
/// provider per order (a new bid replaces the old; a bid may be withdrawn before the deadline).
/// After the deadline, and before the match deadline, anyone submits the match signed by
/// operators holding at least 2/3 of the operator stake (`SpheronOperators`) at the bid
/// deadline, over `Match{orderId, bidsDigest, winner, price, seed, matcherVersion}`; the digest
/// and the seed are the chain's, never an operator's. The winner then confirms the start on
/// chain (billing starts there) before the start deadline, or the lease is cancelled with a
/// full refund. A lease ends at start + duration: billing stops at the earliest of now, the
/// end and the funds; tenant or provider close it at any time, anyone after the end. The
/// tenant can top up and extend. An order nobody matched refunds itself after the match
/// deadline (`expireOrder`, anyone).
///
/// Slashing needs evidence: a proof-of-GPU verdict signed by at least `MIN_VERDICT_SIGNERS`
/// registered verifiers; each slash is capped at `maxSlashBps` of the stake, the reporter gets
/// at most 10%, the treasury the rest. Pause stops deposits, orders, bids and matches, never
/// closing, refunds or withdrawals.
///
/// Invariant: for every token, balanceOf(this) == sum(available + locked) + fees (+ stakes
/// and unbonding stakes for SPHN).
contract SpheronMarket is ProviderRegistry, ReentrancyGuard, Pausable {
    using SafeERC20 for IERC20;

    /// @notice May pause and unpause the market.
    bytes32 public constant PAUSER_ROLE = keccak256("PAUSER_ROLE");
    /// @notice Longest lease, as in the SDK (90 days).
    uint256 public constant MAX_DURATION_SECS = 90 days;
    /// @notice Longest bid window (one day).
    uint32 public constant MAX_BID_WINDOW_SECS = 1 days;
    /// @notice Highest protocol fee (10%).
    uint16 public constant MAX_FEE_BPS = 1_000;
    /// @notice Longest order spec `createOrderWithSpec` logs, in bytes.
    uint256 public constant MAX_SPEC_BYTES = 8192;
    /// @notice Most distinct bidders on one order.
    uint8 public constant MAX_BIDS = 64;
    /// @notice Fewest distinct verifiers whose signatures make a verdict.
    uint256 public constant MIN_VERDICT_SIGNERS = 2;
    /// @notice Oldest verdict accepted, in seconds.
    uint256 public constant VERDICT_MAX_AGE_SECS = 1 days;
    /// @notice EIP-712 type hash of a verifiers' verdict (under the operators contract's domain).
    bytes32 public constant VERDICT_TYPEHASH = keccak256(
        "Verdict(address market,address provider,bytes32 session,bytes32 model,uint128 amount,uint64 issuedAt)"
    );

    /// @notice Lifecycle of an order (and of its lease, which shares its id).
    enum State {
        None,
        Open,
        Matched,
        Leased,
        Closed,
        Cancelled
    }

    /// @notice An order; once matched it also describes the lease. Four storage slots.
    struct Order {
        // slot 0
        address tenant;
        uint32 gpus; // 0: a bare escrow lock, GPUs fixed when the lease opens
        uint40 bidDeadline;
        uint8 bidCount;
        State state;
        // slot 1
        address token;
        uint40 start; // matched at (Matched), billing start (Leased)
        uint32 durationSecs;
        uint16 feeBps; // the token's fee when the order was created
        // slot 2
        uint128 price; // ceiling per GPU-hour while open, agreed price once matched
        uint128 locked;
        // slot 3: the bids digest while open, the lease's provider once matched
        bytes32 digestOrProvider;
    }

    /// @notice An order as returned by `getOrder`.
    struct OrderView {
        address tenant;
        uint32 gpus;
        uint40 bidDeadline;
        uint8 bidCount;
        State state;
        address token;
        uint40 start;
        uint32 durationSecs;
        uint16 feeBps;
        uint128 price;
        uint128 locked;
        bytes32 bidsDigest; // zero once matched
        address provider; // zero until matched
        uint40 end; // start + duration once leased
    }

    /// @notice A provider's bid on an order: one storage slot.
    struct Bid {
        uint96 price; // zero: withdrawn
        uint8 hwClass;
        bool placed;
    }

    /// @notice A verifiers' verdict that `provider` failed proof-of-GPU session `session`
    /// claiming `model`; the market slashes up to `amount` of its stake (capped).
    struct Verdict {
        address provider;
        bytes32 session;
        bytes32 model;
        uint128 amount;
        uint64 issuedAt;
    }

    /// @notice A tenant's (or provider's) funds in one token.
    struct Account {
        uint128 available;
        uint128 locked;
    }

    /// @notice Per-token configuration.
    struct TokenConfig {
        bool allowed;
        uint16 feeBps;
    }

    /// @notice The operators and verifiers whose signatures decide matches and verdicts.
    SpheronOperators public immutable operators;
    /// @notice Seconds after the bid deadline within which a match may be submitted.
    uint32 public immutable matchWindowSecs;
    /// @notice Seconds after the match within which the provider must confirm the start.
    uint32 public immutable startWindowSecs;
    /// @notice Most of a provider's stake one verdict may slash, basis points.
    uint16 public immutable maxSlashBps;

    mapping(address => TokenConfig) public tokens;
    mapping(address => mapping(address => Account)) internal _accounts;
    mapping(address => uint256) public fees;
    mapping(uint64 => Order) internal _orders;
    mapping(uint64 => mapping(address => Bid)) internal _bids;
    /// @notice Verdicts already used (by EIP-712 digest).
    mapping(bytes32 => bool) public verdictUsed;
    /// @notice The id the next order gets.
    uint64 public nextOrderId = 1;

    /// @notice Funds entered the escrow.
    event Deposited(address indexed token, address indexed account, uint256 amount);
    /// @notice Funds left the escrow.
    event Withdrawn(address indexed token, address indexed account, uint256 amount);
    /// @notice Available funds moved between accounts.
    event Transferred(address indexed token, address indexed from, address indexed to, uint256 amount);
    /// @notice A token was allowed, disallowed or its fee changed.
    event TokenConfigured(address indexed token, bool allowed, uint16 feeBps);
    /// @notice Protocol fees were paid out.
    event FeesWithdrawn(address indexed token, address indexed to, uint256 amount);
    /// @notice An order was created and its budget locked (gpus == 0: a bare escrow lock).
    event OrderCreated(
        uint64 indexed id,
        address indexed tenant,
        address indexed token,
        uint128 maxPricePerGpuHour,
        uint32 gpus,
        uint32 durationSecs,
        uint40 bidDeadline,
        uint128 locked
    );
    /// @notice The tenant's full request for order `id` (JSON: models, regions, tier...), logged
    /// right after its `OrderCreated` for providers and matchers to read; never stored.
    event OrderSpec(uint64 indexed id, bytes spec);
    /// @notice An order was cancelled (by its tenant, unmatched past its match deadline, or
    /// matched but not started in time) and its whole lock returned.
    event OrderCancelled(uint64 indexed id, uint128 refunded);
    /// @notice A provider bid on an order (replacing its earlier bid, if any).
    event BidPlaced(uint64 indexed id, address indexed provider, uint96 pricePerGpuHour, bytes32 model);
    /// @notice A provider withdrew its bid.
    event BidWithdrawn(uint64 indexed id, address indexed provider);
    /// @notice An order was matched by an operator quorum (or opened directly by its tenant):
    /// the provider must confirm the start before `startDeadline`.
    event LeaseMatched(
        uint64 indexed id,
        address indexed provider,
        uint128 pricePerGpuHour,
        uint32 gpus,
        uint64 seed,
        uint256 signedWeight,
        uint256 totalWeight,
        uint40 startDeadline
    );
    /// @notice A lease started: billing runs from `start` to at most `end`.
    event LeaseStarted(uint64 indexed id, address indexed provider, uint128 pricePerGpuHour, uint32 gpus, uint40 start, uint40 end);
    /// @notice The tenant extended a lease and locked `added` more.
    event LeaseExtended(uint64 indexed id, uint32 durationSecs, uint128 added);
    /// @notice A lease closed and was settled.
    event LeaseClosed(
        uint64 indexed id,
        address indexed provider,
        address closedBy,
        uint256 secondsBilled,
        uint256 paid,
        uint256 fee,
        uint256 refunded,
        bool fundsExhausted
    );
    /// @notice `settleBatch` left lease `id` alone: not active, or not closable by the caller.
    event SettleSkipped(uint64 indexed id);

    /// @notice The token is not allowed for payments.
    error TokenNotAllowed(address token);
    /// @notice Not enough available funds.
    error InsufficientBalance(uint256 needed, uint256 available);
    /// @notice No such order.
    error UnknownOrder(uint64 id);
    /// @notice The order is not in the state this needs.
    error WrongState(uint64 id, State state);
    /// @notice Only the order's tenant may do this.
    error NotTenant(uint64 id, address caller);
    /// @notice Only the lease's provider may do this.
    error NotProvider(uint64 id, address caller);
    /// @notice The bid is above the order's ceiling.
    error BidAboveCeiling(uint256 price, uint256 ceiling);
    /// @notice The bid window has closed.
    error BidWindowClosed(uint64 id, uint256 deadline);
    /// @notice The bidder is not registered, banned, or not staked enough for its hardware.
    error ProviderNotStaked(address provider);
    /// @notice The order holds the most bidders it can (MAX_BIDS).
    error TooManyBids(uint64 id);
    /// @notice The provider has no live bid on the order (or not at that price).
    error UnknownBid(uint64 id, address provider);
    /// @notice A match before the bid deadline.
    error MatchTooEarly(uint64 id, uint256 bidDeadline);
    /// @notice A match after the match deadline.
    error MatchTooLate(uint64 id, uint256 matchDeadline);
    /// @notice The signers hold less than 2/3 of the operator stake at the bid deadline.
    error QuorumNotReached(uint256 signed, uint256 total);
    /// @notice The signed result is not this order's (digest or seed differ).
    error StaleMatch(uint64 id);
    /// @notice The start window has passed (or not yet, for a cancellation).
    error StartWindow(uint64 id, uint256 deadline);
    /// @notice The lease still runs and has funds: only its tenant or provider may close it.
    error NotClosable(uint64 id, uint256 end);
    /// @notice The lease must have at least one GPU, and as many as the order asked for.
    error GpusMismatch(uint32 ordered, uint32 given);
    /// @notice Duration zero or above MAX_DURATION_SECS, or a bid window above its maximum.
    error InvalidDuration(uint256 durationSecs);
    /// @notice A fee above MAX_FEE_BPS, or a fee on the native token.
    error InvalidFee(address token, uint16 feeBps);
    /// @notice A zero address where an account is required.
    error ZeroAddress();
    /// @notice An order spec longer than MAX_SPEC_BYTES.
    error SpecTooLong(uint256 length);
    /// @notice A verdict with too few signers, expired, from the future, or for another market.
    error BadVerdict(string reason);
    /// @notice The verdict was already used.
    error VerdictUsed(bytes32 digest);
    /// @notice The order is not expired yet.
    error NotExpired(uint64 id, uint256 matchDeadline);

    /// @notice Parameters fixed at deployment.
    struct Params {
        address admin;
        uint48 adminDelay;
        address sphn;
        address operators;
        uint40 unbondingPeriod;
        uint128 minStake;
        uint16 slashReporterBps;
        uint16 maxSlashBps;
        uint32 matchWindowSecs;
        uint32 startWindowSecs;
    }

    constructor(Params memory p)
        ProviderRegistry(p.admin, p.adminDelay, p.sphn, p.unbondingPeriod, p.minStake, p.slashReporterBps)
    {
        if (p.admin == address(0) || p.sphn == address(0) || p.operators == address(0)) revert ZeroAddress();
        if (p.maxSlashBps == 0 || p.maxSlashBps > 10_000) revert BpsTooHigh(p.maxSlashBps);
        if (p.matchWindowSecs == 0 || p.startWindowSecs == 0) revert InvalidDuration(0);
        operators = SpheronOperators(p.operators);
        maxSlashBps = p.maxSlashBps;
        matchWindowSecs = p.matchWindowSecs;
        startWindowSecs = p.startWindowSecs;
        _grantRole(PAUSER_ROLE, p.admin);
        tokens[p.sphn] = TokenConfig({allowed: true, feeBps: 0});
        emit TokenConfigured(p.sphn, true, 0);
    }

    // ---------------------------------------------------------------- administration

    /// @notice Allows or disallows a payment token and sets its fee (never a fee for SPHN); the
    /// fee applies to orders created from now on.
    function configureToken(address token, bool allowed, uint16 feeBps) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (token == address(0)) revert ZeroAddress();
        if (feeBps > MAX_FEE_BPS || (token == sphn && feeBps != 0)) revert InvalidFee(token, feeBps);
        tokens[token] = TokenConfig({allowed: allowed, feeBps: feeBps});
        emit TokenConfigured(token, allowed, feeBps);
    }

    /// @notice Pays accumulated protocol fees (and the treasury's share of slashes) of `token`.
    function withdrawFees(address token, address to) external onlyRole(DEFAULT_ADMIN_ROLE) nonReentrant {
        if (to == address(0)) revert ZeroAddress();
        uint256 amount = fees[token];
        if (amount == 0) revert ZeroAmount();
        fees[token] = 0;
        IERC20(token).safeTransfer(to, amount);
        emit FeesWithdrawn(token, to, amount);
    }

    /// @notice Stops deposits, orders, bids and matches (closing, refunds and withdrawals work).
    function pause() external onlyRole(PAUSER_ROLE) {
        _pause();
    }

    /// @notice Resumes the market.
    function unpause() external onlyRole(PAUSER_ROLE) {
        _unpause();
    }

    // ---------------------------------------------------------------- balances

    /// @notice Deposits `amount` of an allowed token (the amount actually received is credited).
    function deposit(address token, uint256 amount) external nonReentrant whenNotPaused {
        if (amount == 0) revert ZeroAmount();
        if (!tokens[token].allowed) revert TokenNotAllowed(token);
        uint256 before = IERC20(token).balanceOf(address(this));
        IERC20(token).safeTransferFrom(msg.sender, address(this), amount);
        uint256 received = IERC20(token).balanceOf(address(this)) - before;
        _creditAvailable(token, msg.sender, received);
        emit Deposited(token, msg.sender, received);
    }

    /// @notice Withdraws `amount` of the caller's available funds (refunds and earnings).
    function withdraw(address token, uint256 amount) external nonReentrant {
        _debitAvailable(token, msg.sender, amount);
        IERC20(token).safeTransfer(msg.sender, amount);
        emit Withdrawn(token, msg.sender, amount);
    }

    /// @notice Moves available funds to another account inside the escrow.
    function transferBalance(address token, address to, uint256 amount) external nonReentrant {
        if (to == address(0)) revert ZeroAddress();
        _debitAvailable(token, msg.sender, amount);
        _creditAvailable(token, to, amount);
        emit Transferred(token, msg.sender, to, amount);
    }

    // ---------------------------------------------------------------- orders and bids

    /// @notice Creates an order and locks its budget, floor(maxPrice x gpus x duration / 3600).
    /// @return id the order's id (assigned in sequence)
    function createOrder(
        address token,
        uint128 maxPricePerGpuHour,
        uint32 gpus,
        uint32 durationSecs,
        uint32 bidWindowSecs
    ) external nonReentrant whenNotPaused returns (uint64 id) {
        id = _createOrder(token, maxPricePerGpuHour, gpus, durationSecs, bidWindowSecs);
    }

    /// @notice Like `createOrder`, then logs the tenant's full request `spec` (at most
    /// MAX_SPEC_BYTES) in an `OrderSpec` event; the spec is not stored.
    function createOrderWithSpec(
        address token,
        uint128 maxPricePerGpuHour,
        uint32 gpus,
        uint32 durationSecs,
        uint32 bidWindowSecs,
        bytes calldata spec
    ) external nonReentrant whenNotPaused returns (uint64 id) {
        if (spec.length > MAX_SPEC_BYTES) revert SpecTooLong(spec.length);
        id = _createOrder(token, maxPricePerGpuHour, gpus, durationSecs, bidWindowSecs);
        emit OrderSpec(id, spec);
    }

    /// @notice Locks `amount` with no bidding (a direct deal: the tenant then opens the lease
    /// with `openLease`).
    /// @return id the order's id
    function lockFunds(address token, uint128 amount) external nonReentrant whenNotPaused returns (uint64 id) {
        if (amount == 0) revert ZeroAmount();
        id = _open(token, type(uint128).max, 0, 0, 0, amount);
    }

    /// @notice The tenant cancels its open order and gets its lock back.
    function cancelOrder(uint64 id) external nonReentrant {
        Order storage o = _order(id);
        if (o.tenant != msg.sender) revert NotTenant(id, msg.sender);
        if (o.state != State.Open) revert WrongState(id, o.state);
        _refundAll(id, o);
    }

    /// @notice Refunds an order nobody matched before its match deadline (anyone may call).
    function expireOrder(uint64 id) external nonReentrant {
        Order storage o = _order(id);
        if (o.state != State.Open || o.gpus == 0) revert WrongState(id, o.state);
        uint256 matchDeadline = uint256(o.bidDeadline) + matchWindowSecs;
        if (block.timestamp <= matchDeadline) revert NotExpired(id, matchDeadline);
        _refundAll(id, o);
    }

    /// @notice Bids `pricePerGpuHour` on order `id` offering GPU `model` (its catalog name);
    /// the caller must be registered and staked for the model's hardware class. A second bid
    /// by the same provider replaces the first.
    function placeBid(uint64 id, uint96 pricePerGpuHour, bytes32 model) external whenNotPaused {
        Order storage o = _order(id);
        if (o.state != State.Open || o.gpus == 0) revert WrongState(id, o.state);
        if (block.timestamp > o.bidDeadline) revert BidWindowClosed(id, o.bidDeadline);
        if (pricePerGpuHour == 0) revert ZeroAmount();
        if (pricePerGpuHour > o.price) revert BidAboveCeiling(pricePerGpuHour, o.price);
        uint8 class = hardwareClass[model];
        if (!canBidClass(msg.sender, class)) revert ProviderNotStaked(msg.sender);
        Bid storage b = _bids[id][msg.sender];
        if (!b.placed) {
            if (o.bidCount == MAX_BIDS) revert TooManyBids(id);
            o.bidCount += 1;
        }
        _bids[id][msg.sender] = Bid({price: pricePerGpuHour, hwClass: class, placed: true});
        o.digestOrProvider = keccak256(abi.encode(o.digestOrProvider, msg.sender, pricePerGpuHour, class));
        emit BidPlaced(id, msg.sender, pricePerGpuHour, model);
    }

    /// @notice Withdraws the caller's bid on order `id` before the bid deadline.
    function withdrawBid(uint64 id) external {
        Order storage o = _order(id);
        if (o.state != State.Open) revert WrongState(id, o.state);
        if (block.timestamp > o.bidDeadline) revert BidWindowClosed(id, o.bidDeadline);
        Bid storage b = _bids[id][msg.sender];
        if (b.price == 0) revert UnknownBid(id, msg.sender);
        b.price = 0;
        o.digestOrProvider = keccak256(abi.encode(o.digestOrProvider, msg.sender, uint96(0), b.hwClass));
        emit BidWithdrawn(id, msg.sender);
    }

    /// @notice Submits the match of order `id` to `winner`'s bid, signed by operators holding at
    /// least 2/3 of the operator stake at the bid deadline. Anyone may submit it, after the bid
    /// deadline and within the match window. `signers` strictly ascending.
    function submitMatch(
        uint64 id,
        address winner,
        uint32 matcherVersion,
        address[] calldata signers,
        bytes[] calldata signatures
    ) external whenNotPaused {
        Order storage o = _order(id);
        if (o.state != State.Open || o.gpus == 0) revert WrongState(id, o.state);
        if (block.timestamp <= o.bidDeadline) revert MatchTooEarly(id, o.bidDeadline);
        if (block.timestamp > uint256(o.bidDeadline) + matchWindowSecs) {
            revert MatchTooLate(id, uint256(o.bidDeadline) + matchWindowSecs);
        }
        Bid memory b = _bids[id][winner];
        if (b.price == 0) revert UnknownBid(id, winner);
        if (!canBidClass(winner, b.hwClass)) revert ProviderNotStaked(winner);
        uint64 seed = seedOf(id, o.digestOrProvider);
        SpheronOperators.Match memory m = SpheronOperators.Match({
            orderId: id,
            bidsDigest: o.digestOrProvider,
            winner: winner,
            price: b.price,
            seed: seed,
            matcherVersion: matcherVersion
        });
        _match(id, o, winner, b.price, seed, _quorum(m, o.bidDeadline, signers, signatures));
    }

    /// @notice The tenant opens a lease on a direct deal (`lockFunds`) with a provider it chose;
    /// billing starts at once (the tenant's own choice; the provider's stake is not bound to
    /// it) and runs at most MAX_DURATION_SECS, capped by the lock.
    function openLease(uint64 id, address provider, uint128 pricePerGpuHour, uint32 gpus)
        external
        nonReentrant
        whenNotPaused
    {
        Order storage o = _order(id);
        if (msg.sender != o.tenant) revert NotTenant(id, msg.sender);
        if (o.state != State.Open || o.bidDeadline != 0) revert WrongState(id, o.state);
        if (provider == address(0)) revert ZeroAddress();
        if (pricePerGpuHour == 0) revert ZeroAmount();
        if (pricePerGpuHour > o.price) revert BidAboveCeiling(pricePerGpuHour, o.price);
        if (gpus == 0) revert GpusMismatch(o.gpus, gpus);
        uint256 rate = uint256(pricePerGpuHour) * gpus;
        if (rate > type(uint128).max || rate * MAX_DURATION_SECS / 3600 > type(uint128).max) revert AmountOverflow();
        o.durationSecs = uint32(MAX_DURATION_SECS);
        o.state = State.Leased;
        o.gpus = gpus;
        o.start = uint40(block.timestamp);
        o.price = pricePerGpuHour;
        o.digestOrProvider = bytes32(uint256(uint160(provider)));
        emit LeaseStarted(id, provider, pricePerGpuHour, gpus, o.start, o.start + o.durationSecs);
    }

    /// @notice The lease's provider confirms the workload started: billing starts now.
    function confirmStart(uint64 id) external {
        Order storage o = _order(id);
        if (o.state != State.Matched) revert WrongState(id, o.state);
        address provider = _provider(o);
        if (msg.sender != provider) revert NotProvider(id, msg.sender);
        uint256 startDeadline = uint256(o.start) + startWindowSecs;
        if (block.timestamp > startDeadline) revert StartWindow(id, startDeadline);
        o.state = State.Leased;
        o.start = uint40(block.timestamp);
        emit LeaseStarted(id, provider, o.price, o.gpus, o.start, o.start + o.durationSecs);
    }

    /// @notice Cancels a matched lease whose provider did not confirm the start in time, with a
    /// full refund (anyone may call).
    function cancelUnstarted(uint64 id) external nonReentrant {
        Order storage o = _order(id);
        if (o.state != State.Matched) revert WrongState(id, o.state);
        uint256 startDeadline = uint256(o.start) + startWindowSecs;
        if (block.timestamp <= startDeadline) revert StartWindow(id, startDeadline);
        _stakes[_provider(o)].activeLeases -= 1;
        _refundAll(id, o);
    }

    /// @notice The tenant extends a lease by `extraSecs`, locking price x gpus x extraSecs more.
    function extendLease(uint64 id, uint32 extraSecs) external nonReentrant {
        Order storage o = _order(id);
        if (msg.sender != o.tenant) revert NotTenant(id, msg.sender);
        if (o.state != State.Matched && o.state != State.Leased) revert WrongState(id, o.state);
        uint256 duration = uint256(o.durationSecs) + extraSecs;
        if (extraSecs == 0 || duration > MAX_DURATION_SECS) revert InvalidDuration(duration);
        if (o.state == State.Leased && block.timestamp >= uint256(o.start) + o.durationSecs) {
            revert NotClosable(id, uint256(o.start) + o.durationSecs);
        }
        uint256 added = uint256(o.price) * o.gpus * extraSecs / 3600;
        if (added == 0) revert ZeroAmount();
        _debitAvailable(o.token, msg.sender, added);
        _accounts[o.token][msg.sender].locked += uint128(added);
        o.locked += uint128(added);
        o.durationSecs = uint32(duration);
        emit LeaseExtended(id, uint32(duration), uint128(added));
    }

    // ---------------------------------------------------------------- settlement

    /// @notice Closes lease `id`: its tenant or provider at any time, anyone once it ended or
    /// ran out of funds. A matched lease that never started is closed with a full refund.
    function closeLease(uint64 id) external nonReentrant {
        Order storage o = _order(id);
        if (!_closable(o)) {
            if (o.state != State.Matched && o.state != State.Leased) revert WrongState(id, o.state);
            revert NotClosable(id, uint256(o.start) + o.durationSecs);
        }
        _close(id, o);
    }

    /// @notice Closes every lease of `ids` the caller may close (as `closeLease`); skips the
    /// others with a `SettleSkipped` event.
    /// @return closed how many were closed
    function settleBatch(uint64[] calldata ids) external nonReentrant returns (uint256 closed) {
        for (uint256 i = 0; i < ids.length; ++i) {
            Order storage o = _orders[ids[i]];
            if (_closable(o)) {
                _close(ids[i], o);
                ++closed;
            } else {
                emit SettleSkipped(ids[i]);
            }
        }
    }

    // ---------------------------------------------------------------- slashing

    /// @notice Slashes `v.provider` on a verdict signed by at least MIN_VERDICT_SIGNERS
    /// registered verifiers (strictly ascending): at most `maxSlashBps` of its stake, the
    /// caller gets `slashReporterBps` of it, the treasury the rest. Each verdict once.
    function slashWithVerdict(Verdict calldata v, address[] calldata signers, bytes[] calldata signatures)
        external
        nonReentrant
        returns (uint256 slashed)
    {
        if (signers.length < MIN_VERDICT_SIGNERS) revert BadVerdict("too few verifiers");
        if (v.issuedAt > block.timestamp) revert BadVerdict("issued in the future");
        if (block.timestamp - v.issuedAt > VERDICT_MAX_AGE_SECS) revert BadVerdict("expired");
        if (v.amount == 0) revert ZeroAmount();
        bytes32 digest = verdictDigest(v);
        if (verdictUsed[digest]) revert VerdictUsed(digest);
        verdictUsed[digest] = true;
        operators.checkSignatures(SpheronOperators.Kind.Verifier, digest, uint48(block.timestamp), signers, signatures);
        Stake storage s = _stakes[v.provider];
        uint256 cap = (uint256(s.staked) + s.unbonding) * maxSlashBps / 10_000;
        uint256 amount = v.amount < cap ? v.amount : cap;
        if (amount == 0) revert InsufficientStake(v.amount, 0);
        slashed = _slashProvider(v.provider, uint128(amount), msg.sender, digest);
    }

    // ---------------------------------------------------------------- views

    /// @notice An order (and its lease).
    function getOrder(uint64 id) external view returns (OrderView memory v) {
        Order storage o = _orders[id];
        bool matched = o.state == State.Matched || o.state == State.Leased || o.state == State.Closed;
        v = OrderView({
            tenant: o.tenant,
            gpus: o.gpus,
            bidDeadline: o.bidDeadline,
            bidCount: o.bidCount,
            state: o.state,
            token: o.token,
            start: o.start,
            durationSecs: o.durationSecs,
            feeBps: o.feeBps,
            price: o.price,
            locked: o.locked,
            bidsDigest: o.state == State.Open ? o.digestOrProvider : bytes32(0),
            provider: matched ? _provider(o) : address(0),
            end: o.state == State.Leased || o.state == State.Closed ? o.start + o.durationSecs : 0
        });
    }

    /// @notice `provider`'s bid on order `id`.
    function getBid(uint64 id, address provider) external view returns (Bid memory) {
        return _bids[id][provider];
    }

    /// @notice An account's available and locked funds in `token`.
    function accountOf(address token, address account) external view returns (Account memory) {
        return _accounts[token][account];
    }

    /// @notice The matcher's seed for order `id` given its final bids digest: chain data only.
    function seedOf(uint64 id, bytes32 bidsDigest) public pure returns (uint64) {
        return uint64(uint256(keccak256(abi.encode("spheron.match.seed", id, bidsDigest))));
    }

    /// @notice The EIP-712 digest verifiers sign for verdict `v` (operators contract's domain).
    function verdictDigest(Verdict calldata v) public view returns (bytes32) {
        return operators.typedDigest(
            keccak256(
                abi.encode(VERDICT_TYPEHASH, address(this), v.provider, v.session, v.model, v.amount, v.issuedAt)
            )
        );
    }

    /// @notice What lease `id` would pay at time `at`: billed from its start to the earliest of
    /// `at` and its end, capped at its lock (zero for a matched lease not started).
    function accruedAt(uint64 id, uint256 at) public view returns (uint256 secondsBilled, uint256 cost, bool exhausted) {
        Order storage o = _orders[id];
        if (o.state == State.Matched) return (0, 0, false);
        if (o.state != State.Leased) revert WrongState(id, o.state);
        uint256 end = uint256(o.start) + o.durationSecs;
        uint256 until = at < end ? at : end;
        secondsBilled = until > o.start ? until - o.start : 0;
        cost = uint256(o.price) * o.gpus * secondsBilled / 3600;
        exhausted = cost >= o.locked;
        if (exhausted) cost = o.locked;
    }

    // ---------------------------------------------------------------- internals

    function _order(uint64 id) internal view returns (Order storage o) {
        o = _orders[id];
        if (o.state == State.None) revert UnknownOrder(id);
    }

    function _provider(Order storage o) internal view returns (address) {
        return address(uint160(uint256(o.digestOrProvider)));
    }

    function _createOrder(
        address token,
        uint128 maxPricePerGpuHour,
        uint32 gpus,
        uint32 durationSecs,
        uint32 bidWindowSecs
    ) internal returns (uint64) {
        if (gpus == 0) revert GpusMismatch(0, 0);
        if (durationSecs == 0 || durationSecs > MAX_DURATION_SECS) revert InvalidDuration(durationSecs);
        if (bidWindowSecs > MAX_BID_WINDOW_SECS) revert InvalidDuration(bidWindowSecs);
        if (maxPricePerGpuHour == 0) revert ZeroAmount();
        uint256 budget = uint256(maxPricePerGpuHour) * gpus * durationSecs / 3600;
        if (budget > type(uint128).max) revert AmountOverflow();
        if (budget == 0) revert ZeroAmount();
        return _open(
            token, maxPricePerGpuHour, gpus, durationSecs, uint40(block.timestamp) + bidWindowSecs, uint128(budget)
        );
    }

    function _open(
        address token,
        uint128 ceiling,
        uint32 gpus,
        uint32 durationSecs,
        uint40 bidDeadline,
        uint128 amount
    ) internal returns (uint64 id) {
        TokenConfig memory t = tokens[token];
        if (!t.allowed) revert TokenNotAllowed(token);
        _debitAvailable(token, msg.sender, amount);
        _accounts[token][msg.sender].locked += amount;
        id = nextOrderId++;
        Order storage o = _orders[id];
        o.tenant = msg.sender;
        o.gpus = gpus;
        o.bidDeadline = bidDeadline;
        o.state = State.Open;
        o.token = token;
        o.durationSecs = durationSecs;
        o.feeBps = t.feeBps;
        o.price = ceiling;
        o.locked = amount;
        // The bids digest starts from the chain: the previous block's hash and the order id.
        o.digestOrProvider = keccak256(abi.encode(blockhash(block.number - 1), id));
        emit OrderCreated(id, msg.sender, token, ceiling, gpus, durationSecs, bidDeadline, amount);
    }

    /// @dev The signers' weight, checked to be at least 2/3 of the operator stake at `at`.
    function _quorum(
        SpheronOperators.Match memory m,
        uint40 at,
        address[] calldata signers,
        bytes[] calldata signatures
    ) internal view returns (uint256[2] memory weights) {
        (uint256 signed, uint256 total) = operators.checkMatch(m, uint48(at), signers, signatures);
        if (total == 0 || signed * 3 < total * 2) revert QuorumNotReached(signed, total);
        weights = [signed, total];
    }

    function _match(uint64 id, Order storage o, address provider, uint128 price, uint64 seed, uint256[2] memory w)
        internal
    {
        o.state = State.Matched;
        o.start = uint40(block.timestamp);
        o.price = price;
        o.digestOrProvider = bytes32(uint256(uint160(provider)));
        _stakes[provider].activeLeases += 1;
        emit LeaseMatched(id, provider, price, o.gpus, seed, w[0], w[1], uint40(block.timestamp) + startWindowSecs);
    }

    function _refundAll(uint64 id, Order storage o) internal {
        uint128 amount = o.locked;
        o.state = State.Cancelled;
        o.locked = 0;
        Account storage a = _accounts[o.token][o.tenant];
        a.locked -= amount;
        a.available += amount;
        emit OrderCancelled(id, amount);
    }

    function _closable(Order storage o) internal view returns (bool) {
        State st = o.state;
        if (st != State.Matched && st != State.Leased) return false;
        if (msg.sender == o.tenant || msg.sender == _provider(o)) return true;
        if (st == State.Matched) return block.timestamp > uint256(o.start) + startWindowSecs;
        uint256 end = uint256(o.start) + o.durationSecs;
        if (block.timestamp >= end) return true;
        uint256 secs = block.timestamp - o.start;
        return uint256(o.price) * o.gpus * secs / 3600 >= o.locked;
    }

    function _close(uint64 id, Order storage o) internal {
        (uint256 secs, uint256 cost, bool exhausted) = accruedAt(id, block.timestamp);
        address tenant = o.tenant;
        address provider = _provider(o);
        // Market leases (they have a bid deadline) bind the provider's stake; direct deals do not.
        if (o.bidDeadline != 0) _stakes[provider].activeLeases -= 1;
        address token = o.token;
        uint128 locked = o.locked;
        o.state = State.Closed;
        o.locked = 0;
        uint256 fee = cost * o.feeBps / 10_000;
        uint256 refund = locked - cost;
        Account storage t = _accounts[token][tenant];
        t.locked -= locked;
        t.available += uint128(refund);
        if (cost > fee) _creditAvailable(token, provider, cost - fee);
        if (fee > 0) fees[token] += fee;
        emit LeaseClosed(id, provider, msg.sender, secs, cost - fee, fee, refund, exhausted);
    }

    function _debitAvailable(address token, address account, uint256 amount) internal override {
        if (amount == 0) revert ZeroAmount();
        Account storage a = _accounts[token][account];
        if (a.available < amount) revert InsufficientBalance(amount, a.available);
        a.available -= uint128(amount);
    }

    function _creditAvailable(address token, address account, uint256 amount) internal override {
        Account storage a = _accounts[token][account];
        if (uint256(a.available) + amount > type(uint128).max) revert AmountOverflow();
        a.available += uint128(amount);
    }

    function _creditFees(address token, uint256 amount) internal override {
        fees[token] += amount;
    }
}
