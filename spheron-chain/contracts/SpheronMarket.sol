// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";
import {ProviderRegistry} from "./ProviderRegistry.sol";

/// @title SpheronMarket
/// @notice Escrow and order book of the spheron GPU marketplace.
///
/// Tenants deposit any allowed ERC-20 and create orders that lock their budget
/// (max price per GPU-hour x GPUs x duration). Registered, staked providers bid at or below
/// the ceiling inside the bid window. The tenant or a matcher operator (MATCHER_ROLE) matches
/// a bid, which starts the lease. Tenant or provider close it: the provider is paid pro rata
/// per second of block time, floor(price x gpus x seconds / 3600) capped at the lock, less the
/// token's protocol fee; the rest returns to the tenant. Anyone may settle a lease whose funds
/// are exhausted. A lease id is its order id.
///
/// Invariant: for every token, balanceOf(this) == sum(available + locked) + fees (+ stakes
/// and unbonding stakes for SPHN).
contract SpheronMarket is ProviderRegistry, ReentrancyGuard, Pausable {
    using SafeERC20 for IERC20;

    /// @notice May match orders to bids.
    bytes32 public constant MATCHER_ROLE = keccak256("MATCHER_ROLE");
    /// @notice May pause and unpause the market.
    bytes32 public constant PAUSER_ROLE = keccak256("PAUSER_ROLE");
    /// @notice Longest lease, as in the SDK (90 days).
    uint256 public constant MAX_DURATION_SECS = 90 days;
    /// @notice Highest protocol fee (10%).
    uint16 public constant MAX_FEE_BPS = 1_000;
    /// @notice Longest order spec `createOrderWithSpec` logs, in bytes.
    uint256 public constant MAX_SPEC_BYTES = 8192;

    /// @notice Lifecycle of an order (and of its lease, which shares its id).
    enum State {
        None,
        Open,
        Leased,
        Closed,
        Cancelled
    }

    /// @notice An order; once matched it also describes the lease. Three storage slots: the
    /// lease's provider is read from its bid, so matching writes no new slot.
    struct Order {
        // slot 0
        address tenant;
        uint32 gpus; // 0: a bare escrow lock, GPUs fixed when the lease opens
        uint40 bidDeadline;
        uint16 bidCount;
        State state;
        // slot 1
        address token;
        uint40 start;
        uint16 matchedBid; // the lease's provider is _bids[id][matchedBid].provider
        uint32 durationSecs;
        // slot 2
        uint128 price; // ceiling per GPU-hour while open, agreed price once leased
        uint128 locked;
    }

    /// @notice An order as returned by `getOrder`: the stored fields plus the lease's provider.
    struct OrderView {
        address tenant;
        uint32 gpus;
        uint40 bidDeadline;
        uint16 bidCount;
        State state;
        address token;
        uint40 start;
        uint16 matchedBid;
        uint32 durationSecs;
        uint128 price;
        uint128 locked;
        address provider;
    }

    /// @notice A bid: one storage slot.
    struct Bid {
        address provider;
        uint96 price;
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

    mapping(address => TokenConfig) public tokens;
    mapping(address => mapping(address => Account)) internal _accounts;
    mapping(address => uint256) public fees;
    mapping(uint64 => Order) internal _orders;
    mapping(uint64 => mapping(uint256 => Bid)) internal _bids;

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
    /// @notice An open order was cancelled and its lock returned.
    event OrderCancelled(uint64 indexed id, uint128 refunded);
    /// @notice A provider bid on an order.
    event BidPlaced(
        uint64 indexed id, uint256 indexed bidIndex, address indexed provider, uint96 pricePerGpuHour, bytes32 model
    );
    /// @notice A lease started.
    event LeaseStarted(
        uint64 indexed id, address indexed provider, address matchedBy, uint128 pricePerGpuHour, uint32 gpus, uint40 start
    );
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

    /// @notice The token is not allowed for payments.
    error TokenNotAllowed(address token);
    /// @notice Not enough available funds.
    error InsufficientBalance(uint256 needed, uint256 available);
    /// @notice The order id is taken.
    error OrderExists(uint64 id);
    /// @notice No such order.
    error UnknownOrder(uint64 id);
    /// @notice The order is not open for bids or matching.
    error OrderNotOpen(uint64 id);
    /// @notice Only the order's tenant may do this.
    error NotTenant(uint64 id, address caller);
    /// @notice Only the tenant or a matcher operator may match.
    error NotTenantOrMatcher(uint64 id, address caller);
    /// @notice The bid is above the order's ceiling.
    error BidAboveCeiling(uint256 price, uint256 ceiling);
    /// @notice The bid window has closed.
    error BidWindowClosed(uint64 id, uint256 deadline);
    /// @notice The bidder is not registered or not staked.
    error ProviderNotStaked(address provider);
    /// @notice The order holds the most bids it can (65535).
    error TooManyBids(uint64 id);
    /// @notice No such bid.
    error UnknownBid(uint64 id, uint256 bidIndex);
    /// @notice The lease is not active (never started, or already closed).
    error LeaseNotActive(uint64 id);
    /// @notice The lease still has funds: only its tenant, its provider or a matcher operator
    /// may close it.
    error FundsNotExhausted(uint64 id, uint256 cost, uint256 locked);
    /// @notice The lease must have at least one GPU, and as many as the order asked for.
    error GpusMismatch(uint32 ordered, uint32 given);
    /// @notice Duration zero or above MAX_DURATION_SECS.
    error InvalidDuration(uint256 durationSecs);
    /// @notice A fee above MAX_FEE_BPS, or a fee on the native token.
    error InvalidFee(address token, uint16 feeBps);
    /// @notice A zero address where an account is required.
    error ZeroAddress();
    /// @notice An order spec longer than MAX_SPEC_BYTES.
    error SpecTooLong(uint256 length);

    constructor(
        address admin,
        address sphn_,
        uint40 unbondingPeriod_,
        uint128 minStake_,
        uint16 slashReporterBps_
    ) ProviderRegistry(sphn_, unbondingPeriod_, minStake_, slashReporterBps_) {
        if (admin == address(0) || sphn_ == address(0)) revert ZeroAddress();
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(PAUSER_ROLE, admin);
        tokens[sphn_] = TokenConfig({allowed: true, feeBps: 0});
        emit TokenConfigured(sphn_, true, 0);
    }

    // ---------------------------------------------------------------- administration

    /// @notice Allows or disallows a payment token and sets its fee (never a fee for SPHN).
    function configureToken(address token, bool allowed, uint16 feeBps) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (token == address(0)) revert ZeroAddress();
        if (feeBps > MAX_FEE_BPS || (token == sphn && feeBps != 0)) revert InvalidFee(token, feeBps);
        tokens[token] = TokenConfig({allowed: allowed, feeBps: feeBps});
        emit TokenConfigured(token, allowed, feeBps);
    }

    /// @notice Pays accumulated protocol fees of `token` to `to`.
    function withdrawFees(address token, address to) external onlyRole(DEFAULT_ADMIN_ROLE) nonReentrant {
        if (to == address(0)) revert ZeroAddress();
        uint256 amount = fees[token];
        if (amount == 0) revert ZeroAmount();
        fees[token] = 0;
        IERC20(token).safeTransfer(to, amount);
        emit FeesWithdrawn(token, to, amount);
    }

    /// @notice Stops deposits, orders, bids and matches (closing and withdrawing still work).
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
        Account storage a = _accounts[token][msg.sender];
        if (uint256(a.available) + amount > type(uint128).max) revert AmountOverflow();
        uint256 before = IERC20(token).balanceOf(address(this));
        IERC20(token).safeTransferFrom(msg.sender, address(this), amount);
        uint256 received = IERC20(token).balanceOf(address(this)) - before;
        if (uint256(a.available) + received > type(uint128).max) revert AmountOverflow();
        a.available += uint128(received);
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

    /// @notice Creates order `id` and locks its budget, floor(maxPrice x gpus x duration / 3600).
    function createOrder(
        uint64 id,
        address token,
        uint128 maxPricePerGpuHour,
        uint32 gpus,
        uint32 durationSecs,
        uint32 bidWindowSecs
    ) external whenNotPaused {
        _createOrder(id, token, maxPricePerGpuHour, gpus, durationSecs, bidWindowSecs);
    }

    /// @notice Like `createOrder`, then logs the tenant's full request `spec` (at most
    /// MAX_SPEC_BYTES) in an `OrderSpec` event; the spec is not stored.
    function createOrderWithSpec(
        uint64 id,
        address token,
        uint128 maxPricePerGpuHour,
        uint32 gpus,
        uint32 durationSecs,
        uint32 bidWindowSecs,
        bytes calldata spec
    ) external whenNotPaused {
        if (spec.length > MAX_SPEC_BYTES) revert SpecTooLong(spec.length);
        _createOrder(id, token, maxPricePerGpuHour, gpus, durationSecs, bidWindowSecs);
        emit OrderSpec(id, spec);
    }

    /// @notice Locks `amount` for order `id` with no bidding (a direct deal: the tenant then
    /// opens the lease with `openLease`).
    function lockFunds(uint64 id, address token, uint128 amount) external whenNotPaused {
        if (amount == 0) revert ZeroAmount();
        _open(id, token, type(uint128).max, 0, 0, 0, amount);
    }

    /// @notice Cancels an open order and returns its lock to the tenant.
    function cancelOrder(uint64 id) external {
        Order storage o = _orders[id];
        if (o.state == State.None) revert UnknownOrder(id);
        if (o.tenant != msg.sender) revert NotTenant(id, msg.sender);
        if (o.state != State.Open) revert OrderNotOpen(id);
        uint128 amount = o.locked;
        o.state = State.Cancelled;
        o.locked = 0;
        Account storage a = _accounts[o.token][msg.sender];
        a.locked -= amount;
        a.available += amount;
        emit OrderCancelled(id, amount);
    }

    /// @notice Bids `pricePerGpuHour` on order `id` offering GPU `model` (its catalog name,
    /// only logged); the caller must be registered and staked.
    function placeBid(uint64 id, uint96 pricePerGpuHour, bytes32 model) external whenNotPaused returns (uint256 bidIndex) {
        Order storage o = _orders[id];
        if (o.state == State.None) revert UnknownOrder(id);
        if (o.state != State.Open) revert OrderNotOpen(id);
        if (block.timestamp > o.bidDeadline) revert BidWindowClosed(id, o.bidDeadline);
        if (pricePerGpuHour == 0) revert ZeroAmount();
        if (pricePerGpuHour > o.price) revert BidAboveCeiling(pricePerGpuHour, o.price);
        if (!canBid(msg.sender)) revert ProviderNotStaked(msg.sender);
        bidIndex = o.bidCount;
        if (bidIndex == type(uint16).max) revert TooManyBids(id);
        o.bidCount = uint16(bidIndex + 1);
        _bids[id][bidIndex] = Bid({provider: msg.sender, price: pricePerGpuHour});
        emit BidPlaced(id, bidIndex, msg.sender, pricePerGpuHour, model);
    }

    /// @notice Matches order `id` to one of its bids and starts the lease (tenant or matcher).
    function matchBid(uint64 id, uint256 bidIndex) external whenNotPaused {
        Order storage o = _orders[id];
        if (o.state == State.None) revert UnknownOrder(id);
        if (msg.sender != o.tenant && !hasRole(MATCHER_ROLE, msg.sender)) revert NotTenantOrMatcher(id, msg.sender);
        if (o.state != State.Open) revert OrderNotOpen(id);
        if (bidIndex >= o.bidCount) revert UnknownBid(id, bidIndex);
        Bid memory b = _bids[id][bidIndex];
        _startLease(id, o, bidIndex, b.provider, b.price, o.gpus);
    }

    /// @notice The tenant opens a lease on its order directly, with a provider it chose, at a
    /// price at or below the ceiling.
    function openLease(uint64 id, address provider, uint128 pricePerGpuHour, uint32 gpus) external whenNotPaused {
        Order storage o = _orders[id];
        if (o.state == State.None) revert UnknownOrder(id);
        if (msg.sender != o.tenant) revert NotTenant(id, msg.sender);
        if (o.state != State.Open) revert OrderNotOpen(id);
        if (provider == address(0)) revert ZeroAddress();
        if (pricePerGpuHour == 0) revert ZeroAmount();
        if (pricePerGpuHour > o.price) revert BidAboveCeiling(pricePerGpuHour, o.price);
        if (gpus == 0 || (o.gpus != 0 && gpus != o.gpus)) revert GpusMismatch(o.gpus, gpus);
        uint256 rate = uint256(pricePerGpuHour) * gpus;
        if (rate > type(uint128).max || rate * MAX_DURATION_SECS / 3600 > type(uint128).max) revert AmountOverflow();
        // The chosen provider is recorded as a bid (its price lives in the order).
        uint256 bidIndex = o.bidCount;
        if (bidIndex == type(uint16).max) revert TooManyBids(id);
        o.bidCount = uint16(bidIndex + 1);
        _bids[id][bidIndex] = Bid({provider: provider, price: 0});
        _startLease(id, o, bidIndex, provider, pricePerGpuHour, gpus);
    }

    // ---------------------------------------------------------------- settlement

    /// @notice Closes lease `id` now (tenant, provider or matcher operator) or, when its funds
    /// are exhausted, by anyone.
    function closeLease(uint64 id) external {
        _close(id, _orders[id]);
    }

    /// @notice Closes many leases in one call, with the same rules as `closeLease` for each.
    function settleBatch(uint64[] calldata ids) external {
        for (uint256 i = 0; i < ids.length; ++i) {
            _close(ids[i], _orders[ids[i]]);
        }
    }

    // ---------------------------------------------------------------- views

    /// @notice An order (and its lease).
    function getOrder(uint64 id) external view returns (OrderView memory v) {
        Order storage o = _orders[id];
        v = OrderView({
            tenant: o.tenant,
            gpus: o.gpus,
            bidDeadline: o.bidDeadline,
            bidCount: o.bidCount,
            state: o.state,
            token: o.token,
            start: o.start,
            matchedBid: o.matchedBid,
            durationSecs: o.durationSecs,
            price: o.price,
            locked: o.locked,
            provider: o.state == State.Leased || o.state == State.Closed ? _bids[id][o.matchedBid].provider : address(0)
        });
    }

    /// @notice A bid.
    function getBid(uint64 id, uint256 bidIndex) external view returns (Bid memory) {
        return _bids[id][bidIndex];
    }

    /// @notice An account's available and locked funds in `token`.
    function accountOf(address token, address account) external view returns (Account memory) {
        return _accounts[token][account];
    }

    /// @notice What lease `id` would pay at time `at` (capped at its lock).
    function accruedAt(uint64 id, uint256 at) public view returns (uint256 secondsBilled, uint256 cost, bool exhausted) {
        Order storage o = _orders[id];
        if (o.state != State.Leased) revert LeaseNotActive(id);
        secondsBilled = at > o.start ? at - o.start : 0;
        cost = uint256(o.price) * o.gpus * secondsBilled / 3600;
        exhausted = cost >= o.locked;
        if (exhausted) cost = o.locked;
    }

    // ---------------------------------------------------------------- internals

    function _createOrder(
        uint64 id,
        address token,
        uint128 maxPricePerGpuHour,
        uint32 gpus,
        uint32 durationSecs,
        uint32 bidWindowSecs
    ) internal {
        if (gpus == 0) revert GpusMismatch(0, 0);
        if (durationSecs == 0 || durationSecs > MAX_DURATION_SECS) revert InvalidDuration(durationSecs);
        if (maxPricePerGpuHour == 0) revert ZeroAmount();
        uint256 budget = uint256(maxPricePerGpuHour) * gpus * durationSecs / 3600;
        if (budget > type(uint128).max) revert AmountOverflow();
        if (budget == 0) revert ZeroAmount();
        _open(id, token, maxPricePerGpuHour, gpus, durationSecs, uint40(block.timestamp) + bidWindowSecs, uint128(budget));
    }

    function _open(
        uint64 id,
        address token,
        uint128 ceiling,
        uint32 gpus,
        uint32 durationSecs,
        uint40 bidDeadline,
        uint128 amount
    ) internal {
        if (!tokens[token].allowed) revert TokenNotAllowed(token);
        Order storage o = _orders[id];
        if (o.state != State.None) revert OrderExists(id);
        Account storage a = _accounts[token][msg.sender];
        if (a.available < amount) revert InsufficientBalance(amount, a.available);
        a.available -= amount;
        a.locked += amount;
        o.tenant = msg.sender;
        o.gpus = gpus;
        o.bidDeadline = bidDeadline;
        o.state = State.Open;
        o.token = token;
        o.durationSecs = durationSecs;
        o.price = ceiling;
        o.locked = amount;
        emit OrderCreated(id, msg.sender, token, ceiling, gpus, durationSecs, bidDeadline, amount);
    }

    function _startLease(uint64 id, Order storage o, uint256 bidIndex, address provider, uint128 price, uint32 gpus)
        internal
    {
        o.state = State.Leased;
        o.gpus = gpus;
        o.start = uint40(block.timestamp);
        o.matchedBid = uint16(bidIndex);
        o.price = price;
        emit LeaseStarted(id, provider, msg.sender, price, gpus, uint40(block.timestamp));
    }

    function _close(uint64 id, Order storage o) internal {
        if (o.state != State.Leased) revert LeaseNotActive(id);
        (uint256 secs, uint256 cost, bool exhausted) = accruedAt(id, block.timestamp);
        address tenant = o.tenant;
        address provider = _bids[id][o.matchedBid].provider;
        if (!exhausted && msg.sender != tenant && msg.sender != provider && !hasRole(MATCHER_ROLE, msg.sender)) {
            revert FundsNotExhausted(id, cost, o.locked);
        }
        address token = o.token;
        uint128 locked = o.locked;
        o.state = State.Closed;
        o.locked = 0;
        uint256 fee = cost * tokens[token].feeBps / 10_000;
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
