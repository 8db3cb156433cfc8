// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {AccessControlDefaultAdminRules} from
    "@openzeppelin/contracts/access/extensions/AccessControlDefaultAdminRules.sol";

/// @title ProviderRegistry
/// @notice Providers register an endpoint, a region, a public key, the hash of their gateway's
/// TLS certificate and an opaque metadata document, and stake the native SPHN token from their
/// escrow balance. Registered providers are enumerable in registration order. Unstaking waits
/// out an unbonding period and cannot complete while the provider has a lease matched or
/// running. Each hardware class may require more stake than `minStake`. No role slashes:
/// the market slashes only on evidence (a verdict signed by registered verifiers), capped per
/// event, and bans a provider after `BAN_AFTER` such verdicts. TIER_ROLE sets trust tiers
/// (0..=7, higher is better). The admin is behind OpenZeppelin's
/// AccessControlDefaultAdminRules: handing it over waits out a delay.
/// @dev Abstract: the market inherits it so stakes live in the same balance sheet as escrow.
abstract contract ProviderRegistry is AccessControlDefaultAdminRules {
    /// @notice May set provider trust tiers.
    bytes32 public constant TIER_ROLE = keccak256("TIER_ROLE");
    /// @notice Highest trust tier.
    uint8 public constant MAX_TIER = 7;
    /// @notice Longest `meta` document a registration may carry, in bytes.
    uint256 public constant MAX_META_BYTES = 4096;
    /// @notice Fraud verdicts after which a provider is banned for good.
    uint8 public constant BAN_AFTER = 3;

    /// @notice A registered provider.
    struct ProviderInfo {
        bool registered;
        uint8 tier;
        string endpoint;
        string region;
        bytes publicKey;
        // hash of the gateway's TLS certificate (zero: plain HTTP on loopback devnets)
        bytes32 certHash;
        // opaque JSON written by the SDK: name, coordinates, GPU inventory summary
        string meta;
    }

    /// @notice A provider's stake in SPHN, and what binds it.
    struct Stake {
        uint128 staked;
        uint128 unbonding;
        // at least 1 once the provider staked, so this slot never returns to zero: each
        // match's activeLeases increment then costs 2.9k gas, not a zero-to-non-zero 20k
        uint40 releaseAt;
        // leases matched or running: unbonding cannot complete while any is
        uint32 activeLeases;
        // fraud verdicts slashed so far; BAN_AFTER bans
        uint8 frauds;
        bool banned;
    }

    /// @notice The native token stakes are held in (never charged a fee).
    address public immutable sphn;
    /// @notice Seconds between an unstake request and its withdrawal.
    uint40 public immutable unbondingPeriod;
    /// @notice Minimum stake to bid on orders (per hardware class see `classMinStake`).
    uint128 public immutable minStake;
    /// @notice Share of a slash paid to the reporter, in basis points (at most
    /// MAX_REPORTER_BPS); the rest accrues to the protocol treasury (`fees[sphn]`).
    uint16 public immutable slashReporterBps;
    /// @notice Highest share of a slash paid to its reporter (10%).
    uint16 public constant MAX_REPORTER_BPS = 1_000;

    /// @notice The hardware class of a GPU model (its catalog name as bytes32); 0 by default.
    mapping(bytes32 => uint8) public hardwareClass;
    /// @notice Minimum stake of a hardware class (never below `minStake`).
    mapping(uint8 => uint128) public classMinStake;

    mapping(address => ProviderInfo) internal _providers;
    mapping(address => Stake) internal _stakes;
    /// @dev Every provider that ever registered, in order of first registration.
    address[] internal _providerList;

    /// @notice A provider registered or updated its registration.
    event ProviderRegistered(
        address indexed provider, string endpoint, string region, bytes publicKey, bytes32 certHash, string meta
    );
    /// @notice Stake moved from available SPHN into stake.
    event Staked(address indexed provider, uint256 amount, uint256 totalStaked);
    /// @notice Stake started unbonding.
    event UnstakeRequested(address indexed provider, uint256 amount, uint256 releaseAt);
    /// @notice Unbonded stake returned to available SPHN.
    event Unstaked(address indexed provider, uint256 amount);
    /// @notice Stake was slashed on evidence (`evidence`: the verdict's EIP-712 digest).
    event Slashed(
        address indexed provider,
        address indexed reporter,
        bytes32 indexed evidence,
        uint256 amount,
        uint256 reporterShare,
        uint8 frauds,
        bool banned
    );
    /// @notice A GPU model's hardware class, or a class's minimum stake, was set.
    event HardwareClassSet(bytes32 indexed model, uint8 class, uint128 minStake);
    /// @notice A provider's trust tier changed.
    event TierSet(address indexed provider, uint8 tier);

    /// @notice An amount was zero where a positive amount is required.
    error ZeroAmount();
    /// @notice An amount does not fit the ledger's 128-bit balances (or a price x GPUs x
    /// duration product does not).
    error AmountOverflow();
    /// @notice Registration fields were empty.
    error EmptyRegistration();
    /// @notice The provider is not registered.
    error NotRegistered(address provider);
    /// @notice A tier above MAX_TIER.
    error InvalidTier(uint8 tier);
    /// @notice More stake asked for than staked.
    error InsufficientStake(uint256 requested, uint256 staked);
    /// @notice Nothing is unbonding.
    error NothingUnbonding(address provider);
    /// @notice The unbonding period has not ended.
    error UnbondingNotOver(uint256 releaseAt);
    /// @notice A basis-point value above 10000.
    error BpsTooHigh(uint256 bps);
    /// @notice A registration's `meta` is longer than MAX_META_BYTES.
    error MetaTooLong(uint256 length);
    /// @notice The provider still has leases matched or running.
    error ActiveLeases(address provider, uint256 count);
    /// @notice The provider is banned for repeated fraud.
    error Banned(address provider);

    constructor(
        address admin,
        uint48 adminDelay,
        address sphn_,
        uint40 unbondingPeriod_,
        uint128 minStake_,
        uint16 slashReporterBps_
    ) AccessControlDefaultAdminRules(adminDelay, admin) {
        if (slashReporterBps_ > MAX_REPORTER_BPS) revert BpsTooHigh(slashReporterBps_);
        if (minStake_ == 0) revert ZeroAmount();
        sphn = sphn_;
        unbondingPeriod = unbondingPeriod_;
        minStake = minStake_;
        slashReporterBps = slashReporterBps_;
    }

    /// @notice Registers (or updates) the caller as a provider. `certHash` is the hash of the
    /// gateway's TLS certificate (zero for plain-HTTP loopback devnets); `meta` is an opaque
    /// document of at most MAX_META_BYTES. The first registration adds the caller to the
    /// enumerable list; later ones update the fields in place.
    function register(
        string calldata endpoint,
        string calldata region,
        bytes calldata publicKey,
        bytes32 certHash,
        string calldata meta
    ) external {
        if (bytes(endpoint).length == 0 || bytes(region).length == 0 || publicKey.length == 0) {
            revert EmptyRegistration();
        }
        if (bytes(meta).length > MAX_META_BYTES) revert MetaTooLong(bytes(meta).length);
        ProviderInfo storage p = _providers[msg.sender];
        if (!p.registered) {
            p.registered = true;
            _providerList.push(msg.sender);
        }
        p.endpoint = endpoint;
        p.region = region;
        p.publicKey = publicKey;
        p.certHash = certHash;
        p.meta = meta;
        emit ProviderRegistered(msg.sender, endpoint, region, publicKey, certHash, meta);
    }

    /// @notice Moves `amount` of the caller's available SPHN into stake.
    function stake(uint128 amount) external {
        Stake storage s = _stakes[msg.sender];
        if (s.banned) revert Banned(msg.sender);
        _debitAvailable(sphn, msg.sender, amount);
        if (s.releaseAt == 0) s.releaseAt = 1;
        uint256 total = uint256(s.staked) + amount;
        if (total > type(uint128).max) revert AmountOverflow();
        s.staked = uint128(total);
        emit Staked(msg.sender, amount, total);
    }

    /// @notice Starts unbonding `amount` of the caller's stake; it can be withdrawn after the
    /// unbonding period (a new request restarts the period for everything unbonding).
    function requestUnstake(uint128 amount) external {
        Stake storage s = _stakes[msg.sender];
        if (amount == 0) revert ZeroAmount();
        if (amount > s.staked) revert InsufficientStake(amount, s.staked);
        s.staked -= amount;
        s.unbonding += amount;
        uint40 releaseAt = uint40(block.timestamp) + unbondingPeriod;
        s.releaseAt = releaseAt;
        emit UnstakeRequested(msg.sender, amount, releaseAt);
    }

    /// @notice Returns unbonded stake to the caller's available SPHN.
    function withdrawUnstaked() external {
        Stake storage s = _stakes[msg.sender];
        uint128 amount = s.unbonding;
        if (amount == 0) revert NothingUnbonding(msg.sender);
        if (block.timestamp < s.releaseAt) revert UnbondingNotOver(s.releaseAt);
        if (s.activeLeases != 0) revert ActiveLeases(msg.sender, s.activeLeases);
        s.unbonding = 0;
        _creditAvailable(sphn, msg.sender, amount);
        emit Unstaked(msg.sender, amount);
    }

    /// @notice Puts GPU model `model` in hardware class `class` and sets that class's minimum
    /// stake (at least `minStake`).
    function setHardwareClass(bytes32 model, uint8 class, uint128 classMinimum) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (classMinimum < minStake) revert InsufficientStake(classMinimum, minStake);
        hardwareClass[model] = class;
        classMinStake[class] = classMinimum;
        emit HardwareClassSet(model, class, classMinimum);
    }

    /// @notice Sets `provider`'s trust tier.
    function setTier(address provider, uint8 tier) external onlyRole(TIER_ROLE) {
        if (tier > MAX_TIER) revert InvalidTier(tier);
        ProviderInfo storage p = _providers[provider];
        if (!p.registered) revert NotRegistered(provider);
        p.tier = tier;
        emit TierSet(provider, tier);
    }

    /// @notice A provider's registration.
    function providerInfo(address provider) external view returns (ProviderInfo memory) {
        return _providers[provider];
    }

    /// @notice How many providers ever registered.
    function providerCount() external view returns (uint256) {
        return _providerList.length;
    }

    /// @notice Up to `count` provider addresses from position `start`, in registration order;
    /// clamped to the end of the list (empty when `start` is past it).
    function providersPage(uint256 start, uint256 count) external view returns (address[] memory page) {
        uint256 len = _providerList.length;
        if (start >= len) return new address[](0);
        uint256 end = count > len - start ? len : start + count;
        page = new address[](end - start);
        for (uint256 i = start; i < end; ++i) {
            page[i - start] = _providerList[i];
        }
    }

    /// @notice A provider's stake.
    function stakeOf(address provider) external view returns (Stake memory) {
        return _stakes[provider];
    }

    /// @notice Whether `provider` may bid: registered, not banned and staked at least `minStake`.
    function canBid(address provider) public view returns (bool) {
        return canBidClass(provider, 0);
    }

    /// @notice Whether `provider` may bid with hardware of class `class`.
    function canBidClass(address provider, uint8 class) public view returns (bool) {
        Stake storage s = _stakes[provider];
        uint128 need = classMinStake[class];
        if (need < minStake) need = minStake;
        return _providers[provider].registered && !s.banned && s.staked >= need;
    }

    /// @notice Slashes up to `amount` of `provider`'s stake (staked first, then unbonding),
    /// paying the reporter `slashReporterBps` and the treasury the rest; counts a fraud and
    /// bans at BAN_AFTER. Only the market's evidence checks call it.
    function _slashProvider(address provider, uint128 amount, address reporter, bytes32 evidence)
        internal
        returns (uint256 slashed)
    {
        Stake storage s = _stakes[provider];
        uint128 fromStaked = amount < s.staked ? amount : s.staked;
        uint128 rest = amount - fromStaked;
        uint128 fromUnbonding = rest < s.unbonding ? rest : s.unbonding;
        s.staked -= fromStaked;
        s.unbonding -= fromUnbonding;
        slashed = uint256(fromStaked) + fromUnbonding;
        if (s.frauds < type(uint8).max) s.frauds += 1;
        if (s.frauds >= BAN_AFTER) s.banned = true;
        uint256 share = slashed * slashReporterBps / 10_000;
        if (share > 0) _creditAvailable(sphn, reporter, share);
        if (slashed > share) _creditFees(sphn, slashed - share);
        emit Slashed(provider, reporter, evidence, slashed, share, s.frauds, s.banned);
    }

    function _debitAvailable(address token, address account, uint256 amount) internal virtual;
    function _creditAvailable(address token, address account, uint256 amount) internal virtual;
    function _creditFees(address token, uint256 amount) internal virtual;
}
