// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";

/// @title ProviderRegistry
/// @notice Providers register an endpoint, a region, a public key, the hash of their gateway's
/// TLS certificate and an opaque metadata document, and stake the native SPHN token from their
/// escrow balance. Registered providers are enumerable in registration order. Unstaking waits out an unbonding period. The
/// verifier network (SLASHER_ROLE) slashes stake, paying a share to the reporting verifier;
/// TIER_ROLE sets trust tiers (0..=7, higher is better).
/// @dev Abstract: the market inherits it so stakes live in the same balance sheet as escrow.
abstract contract ProviderRegistry is AccessControl {
    /// @notice May slash provider stake.
    bytes32 public constant SLASHER_ROLE = keccak256("SLASHER_ROLE");
    /// @notice May set provider trust tiers.
    bytes32 public constant TIER_ROLE = keccak256("TIER_ROLE");
    /// @notice Highest trust tier.
    uint8 public constant MAX_TIER = 7;
    /// @notice Longest `meta` document a registration may carry, in bytes.
    uint256 public constant MAX_META_BYTES = 4096;

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

    /// @notice A provider's stake in SPHN.
    struct Stake {
        uint128 staked;
        uint128 unbonding;
        uint40 releaseAt;
    }

    /// @notice The native token stakes are held in (never charged a fee).
    address public immutable sphn;
    /// @notice Seconds between an unstake request and its withdrawal.
    uint40 public immutable unbondingPeriod;
    /// @notice Minimum stake to bid on orders.
    uint128 public immutable minStake;
    /// @notice Share of a slash paid to the reporting verifier, in basis points; the rest
    /// accrues to protocol fees.
    uint16 public immutable slashReporterBps;

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
    /// @notice Stake was slashed.
    event Slashed(address indexed provider, address indexed reporter, uint256 amount, uint256 reporterShare);
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

    constructor(address sphn_, uint40 unbondingPeriod_, uint128 minStake_, uint16 slashReporterBps_) {
        if (slashReporterBps_ > 10_000) revert BpsTooHigh(slashReporterBps_);
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
        _debitAvailable(sphn, msg.sender, amount);
        Stake storage s = _stakes[msg.sender];
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
        s.unbonding = 0;
        _creditAvailable(sphn, msg.sender, amount);
        emit Unstaked(msg.sender, amount);
    }

    /// @notice Slashes up to `amount` of `provider`'s stake (staked first, then unbonding);
    /// `reporter` receives `slashReporterBps` of it, protocol fees the rest.
    /// @return slashed what was actually slashed (never more than the stake).
    function slash(address provider, uint128 amount, address reporter)
        external
        onlyRole(SLASHER_ROLE)
        returns (uint256 slashed)
    {
        if (amount == 0) revert ZeroAmount();
        Stake storage s = _stakes[provider];
        uint128 fromStaked = amount < s.staked ? amount : s.staked;
        uint128 rest = amount - fromStaked;
        uint128 fromUnbonding = rest < s.unbonding ? rest : s.unbonding;
        s.staked -= fromStaked;
        s.unbonding -= fromUnbonding;
        slashed = uint256(fromStaked) + fromUnbonding;
        uint256 share = slashed * slashReporterBps / 10_000;
        if (share > 0) _creditAvailable(sphn, reporter, share);
        if (slashed > share) _creditFees(sphn, slashed - share);
        emit Slashed(provider, reporter, slashed, share);
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

    /// @notice Whether `provider` may bid: registered and staked at least `minStake`.
    function canBid(address provider) public view returns (bool) {
        uint128 staked = _stakes[provider].staked;
        return _providers[provider].registered && staked > 0 && staked >= minStake;
    }

    function _debitAvailable(address token, address account, uint256 amount) internal virtual;
    function _creditAvailable(address token, address account, uint256 amount) internal virtual;
    function _creditFees(address token, uint256 amount) internal virtual;
}
