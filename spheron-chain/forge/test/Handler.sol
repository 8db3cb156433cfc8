// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Vm} from "./Vm.sol";
import {PlainToken, FeeOnTransferToken, HookToken, ITransferHook} from "./Tokens.sol";
import {SpheronMarket} from "spheron/SpheronMarket.sol";
import {ProviderRegistry} from "spheron/ProviderRegistry.sol";
import {SpheronOperators} from "spheron/SpheronOperators.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";

/// @notice Drives SpheronMarket and SpheronOperators with bounded random operations by
/// tenants, providers, operators, verifiers and an attacker, and keeps a reference model of
/// what every call should have done. Each call's outcome is predicted first (success, or the
/// exact custom-error selector); a revert the model did not predict, a success it did not
/// predict, or another error than predicted is counted and fails the invariant. The model is
/// updated from each operation's intended effect, never by reading the contracts back.
contract Handler is ITransferHook {
    Vm internal constant vm = Vm(address(uint160(uint256(keccak256("hevm cheat code")))));
    bytes4 internal constant OK = bytes4(0);

    // ------------------------------------------------------------ deployment parameters
    uint40 public constant UNBONDING = 7 days;
    uint128 public constant PROVIDER_MIN = 10e18;
    uint128 public constant H100_MIN = 50e18;
    uint16 public constant SLASH_REPORTER_BPS = 1_000;
    uint16 public constant MAX_SLASH_BPS = 5_000;
    uint32 public constant MATCH_WINDOW = 1 hours;
    uint32 public constant START_WINDOW = 2 hours;
    uint128 public constant OP_MIN = 100e18;
    uint16 public constant EQ_SLASH_BPS = 1_000;
    uint16 public constant EQ_REPORTER_BPS = 1_000;
    bytes32 public constant A100 = "A100";
    bytes32 public constant H100 = "H100";
    bytes32 public constant TPU = "TPU";
    address public constant BURN = 0x000000000000000000000000000000000000dEaD;

    SpheronMarket public market;
    SpheronOperators public ops;
    PlainToken public sphn;
    PlainToken public usdc;
    FeeOnTransferToken public fot;
    HookToken public hook;
    PlainToken public junk;
    address[4] public pay;

    address public admin;
    address public attacker;
    address[3] public tenants;
    address[3] public providers;
    uint256[4] internal opKeys;
    address[4] public operators;
    uint256[2] internal verKeys;
    address[2] public verifiers;
    uint256 internal strangerKey;
    address public stranger;
    /// every account that may hold market balances (tenants, providers, attacker, admin)
    address[] public tracked;
    /// every SpheronOperators party
    address[] public parties;

    // ------------------------------------------------------------ reference model
    struct MOrder {
        address tenant;
        address token;
        uint32 gpus;
        uint40 bidDeadline;
        uint8 state; // 0 None 1 Open 2 Matched 3 Leased 4 Closed 5 Cancelled
        uint40 start;
        uint32 duration;
        uint16 feeBps;
        uint128 price;
        uint128 locked;
        uint128 everLocked;
        uint256 paid;
        address provider;
        uint8 bidCount;
        bool extended;
    }

    struct MBid {
        uint96 price;
        uint8 cls;
        bool placed;
    }

    struct MStake {
        uint128 staked;
        uint128 unbonding;
        uint40 releaseAt;
        uint32 active;
        uint8 frauds;
        bool banned;
    }

    struct MParty {
        uint8 kind; // 0 none 1 operator 2 verifier
        uint128 staked;
        uint128 unbonding;
        uint40 releaseAt;
    }

    mapping(address => mapping(address => uint256)) public mAv;
    mapping(address => mapping(address => uint256)) public mLk;
    mapping(address => uint256) public mFees;
    mapping(address => uint16) public mFeeBps;
    mapping(address => bool) public mAllowed;
    mapping(uint64 => MOrder) internal mo;
    mapping(uint64 => mapping(address => MBid)) internal mb;
    uint64 public mNext = 1;
    mapping(address => MStake) internal ms;
    mapping(address => bool) public mRegistered;
    mapping(bytes32 => uint8) internal mClass;
    mapping(uint8 => uint128) internal mClassMin;
    mapping(address => MParty) internal mp;
    mapping(address => uint48[]) internal wTs;
    mapping(address => uint256[]) internal wVal;
    mapping(uint8 => uint48[]) internal tTs;
    mapping(uint8 => uint256[]) internal tVal;
    mapping(address => mapping(uint64 => bool)) internal mEquivocated;
    mapping(bytes32 => bool) internal mVerdictUsed;
    uint256 public mBurned;
    bool public mPaused;

    // last verdict that slashed, to replay it
    SpheronMarket.Verdict internal lastVerdict;
    bool internal haveLastVerdict;
    uint256 internal nonce;

    // ------------------------------------------------------------ ghost bookkeeping
    uint256 public expectedReverts;
    uint256 public unexpectedReverts;
    uint256 public unexpectedSuccesses;
    uint256 public wrongErrors;
    string public lastBad;
    bool public strangerSucceeded;
    string public strangerWhat;
    bool public overBilled;
    uint256 public calls;
    mapping(string => uint256) public okCount;
    uint256 public matches;
    uint256 public closes;
    uint256 public slashes;
    uint256 public reentries;
    /// every order that became a lease (quorum match or openLease), oldest first
    uint64[] public leases;

    // transfer hook state
    uint8 internal hookMode;
    uint256 internal innerSeed;
    bool internal inHook;

    constructor(address[4] memory toks, address junk_, address market_, address ops_) {
        sphn = PlainToken(toks[0]);
        usdc = PlainToken(toks[1]);
        fot = FeeOnTransferToken(toks[2]);
        hook = HookToken(toks[3]);
        junk = PlainToken(junk_);
        pay = [toks[1], toks[2], toks[3], toks[0]];
        market = SpheronMarket(market_);
        ops = SpheronOperators(ops_);
    }

    /// @notice Setup through the model (the test contract calls it once).
    function init(address admin_) external {
        admin = admin_;
        clock = block.timestamp;
        attacker = vm.addr(0xA77AC4E5);
        strangerKey = 0x5745A6E5;
        stranger = vm.addr(strangerKey);
        for (uint256 i = 0; i < 3; ++i) {
            tenants[i] = vm.addr(0x7E0A00 + i);
            providers[i] = vm.addr(0x960B00 + i);
            vm.label(tenants[i], string.concat("tenant", _u(i)));
            vm.label(providers[i], string.concat("provider", _u(i)));
            tracked.push(tenants[i]);
        }
        for (uint256 i = 0; i < 3; ++i) tracked.push(providers[i]);
        tracked.push(attacker);
        tracked.push(admin);
        vm.label(attacker, "attacker");
        hook.setHook(address(this), 0);

        // admin: tokens and a hardware class
        mAllowed[address(sphn)] = true;
        _adm(abi.encodeCall(SpheronMarket.configureToken, (address(usdc), true, 200)));
        _adm(abi.encodeCall(SpheronMarket.configureToken, (address(fot), true, 100)));
        _adm(abi.encodeCall(SpheronMarket.configureToken, (address(hook), true, 500)));
        (mAllowed[address(usdc)], mFeeBps[address(usdc)]) = (true, 200);
        (mAllowed[address(fot)], mFeeBps[address(fot)]) = (true, 100);
        (mAllowed[address(hook)], mFeeBps[address(hook)]) = (true, 500);
        _adm(abi.encodeCall(ProviderRegistry.setHardwareClass, (H100, 1, H100_MIN)));
        _adm(abi.encodeCall(ProviderRegistry.setHardwareClass, (A100, 0, PROVIDER_MIN)));
        mClass[H100] = 1;
        mClassMin[1] = H100_MIN;
        mClassMin[0] = PROVIDER_MIN;

        // providers: registered, staked 60 SPHN of 200 deposited
        for (uint256 i = 0; i < 3; ++i) {
            address p = providers[i];
            vm.prank(p);
            market.register("https://p.example", "eu-west", hex"01", bytes32(0), "{}");
            mRegistered[p] = true;
            _depositRaw(p, address(sphn), 200e18);
            vm.prank(p);
            market.stake(60e18);
            mAv[address(sphn)][p] -= 60e18;
            ms[p].staked = 60e18;
        }
        // tenants: 1e12 of each 6-decimal token, 1000 SPHN
        for (uint256 i = 0; i < 3; ++i) {
            _depositRaw(tenants[i], address(usdc), 1e12);
            _depositRaw(tenants[i], address(fot), 1e12);
            _depositRaw(tenants[i], address(hook), 1e12);
            _depositRaw(tenants[i], address(sphn), 1000e18);
        }
        _depositRaw(attacker, address(usdc), 1e11);
        // operators 100/200/300/400 SPHN, verifiers 100 each
        for (uint256 i = 0; i < 4; ++i) {
            opKeys[i] = 0x0BE2A700 + i;
            operators[i] = vm.addr(opKeys[i]);
            parties.push(operators[i]);
            _partyRegisterRaw(operators[i], 1, uint128(100e18 * (i + 1)));
        }
        for (uint256 i = 0; i < 2; ++i) {
            verKeys[i] = 0x7E21F100 + i;
            verifiers[i] = vm.addr(verKeys[i]);
            parties.push(verifiers[i]);
            _partyRegisterRaw(verifiers[i], 2, 100e18);
        }
    }

    function _adm(bytes memory data) internal {
        vm.prank(admin);
        (bool ok,) = address(market).call(data);
        require(ok, "setup: admin call failed");
    }

    function _depositRaw(address who, address token, uint256 amount) internal {
        PlainToken(token).mint(who, amount);
        vm.prank(who);
        PlainToken(token).approve(address(market), amount);
        vm.prank(who);
        market.deposit(token, amount);
        mAv[token][who] += token == address(fot) ? amount - amount / 100 : amount;
    }

    function _partyRegisterRaw(address who, uint8 kind, uint128 amount) internal {
        sphn.mint(who, amount);
        vm.prank(who);
        sphn.approve(address(ops), amount);
        vm.prank(who);
        ops.register(SpheronOperators.Kind(kind), "https://op.example", amount);
        mp[who].kind = kind;
        mp[who].staked += amount;
        _setWeight(who, kind, mp[who].staked);
    }

    // ------------------------------------------------------------ helpers

    function _u(uint256 v) internal pure returns (string memory s) {
        if (v == 0) return "0";
        while (v != 0) {
            s = string.concat(string(abi.encodePacked(bytes1(uint8(48 + v % 10)))), s);
            v /= 10;
        }
    }

    function _hex4(bytes4 b) internal pure returns (string memory) {
        bytes memory out = new bytes(10);
        bytes16 digits = "0123456789abcdef";
        out[0] = "0";
        out[1] = "x";
        for (uint256 i = 0; i < 4; ++i) {
            out[2 + 2 * i] = digits[uint8(b[i]) >> 4];
            out[3 + 2 * i] = digits[uint8(b[i]) & 15];
        }
        return string(out);
    }

    function _sel(bytes memory ret) internal pure returns (bytes4 s) {
        if (ret.length < 4) return bytes4(0xffffffff);
        assembly {
            s := mload(add(ret, 32))
        }
    }

    function _bad(string memory op, bytes4 got, bytes4 want) internal {
        lastBad = string.concat(op, ": got ", _hex4(got), " want ", _hex4(want), " at call ", _u(calls));
    }

    /// @dev Calls `target` as `who` and checks the outcome against the prediction `want`.
    /// Returns true when the call succeeded as predicted (the caller then applies the model).
    function _exec(string memory op, address who, address target, bytes memory data, bytes4 want)
        internal
        returns (bool, bytes memory)
    {
        vm.prank(who);
        (bool ok, bytes memory ret) = target.call(data);
        if (ok) {
            if (want != OK) {
                unexpectedSuccesses++;
                _bad(op, OK, want);
                return (false, ret);
            }
            okCount[op]++;
            return (true, ret);
        }
        bytes4 got = _sel(ret);
        if (want == OK) {
            unexpectedReverts++;
            _bad(op, got, want);
        } else if (got != want) {
            wrongErrors++;
            _bad(op, got, want);
        } else {
            expectedReverts++;
        }
        return (false, ret);
    }

    function _now() internal view returns (uint256) {
        return block.timestamp;
    }

    function _actor(uint256 s) internal view returns (address) {
        return tracked[s % tracked.length];
    }

    function _token(uint256 s) internal view returns (address) {
        uint256 i = s % 9;
        if (i == 8) return address(junk);
        return pay[i % 4];
    }

    /// @dev Mostly one of the three newest orders; sometimes any id up to one past the last.
    function _id(uint256 s) internal view returns (uint64) {
        uint256 n = uint256(mNext) - 1;
        if (n == 0 || s % 4 == 0) return uint64((s >> 2) % (n + 2));
        uint256 k = n < 3 ? n : 3;
        return uint64(n - (s >> 2) % k);
    }

    /// @dev Most of the time the newest lease (or the one before it); otherwise `_id`.
    function _leaseId(uint256 s) internal view returns (uint64) {
        uint256 n = leases.length;
        if (n == 0 || s % 4 == 0) return _id(s >> 2);
        return leases[n - 1 - (s >> 2) % (n < 2 ? 1 : 2)];
    }

    /// @dev Moves the handler clock forward to `t` (never back; never inside a hook).
    function _warpTo(uint256 t) internal {
        if (inHook || t <= clock) return;
        clock = t;
        vm.warp(t);
    }

    function _lookup(uint48[] storage ts, uint256[] storage vs, uint256 at) internal view returns (uint256) {
        for (uint256 i = ts.length; i > 0; --i) {
            if (ts[i - 1] <= at) return vs[i - 1];
        }
        return 0;
    }

    function _setWeight(address party, uint8 kind, uint256 w) internal {
        uint256 old = wVal[party].length == 0 ? 0 : wVal[party][wVal[party].length - 1];
        wTs[party].push(uint48(block.timestamp));
        wVal[party].push(w);
        uint256 total = tVal[kind].length == 0 ? 0 : tVal[kind][tVal[kind].length - 1];
        tTs[kind].push(uint48(block.timestamp));
        tVal[kind].push(total - old + w);
    }

    function weightAt(address party, uint256 at) public view returns (uint256) {
        return _lookup(wTs[party], wVal[party], at);
    }

    function totalAt(uint8 kind, uint256 at) public view returns (uint256) {
        return _lookup(tTs[kind], tVal[kind], at);
    }

    function _canBid(address p, uint8 cls) internal view returns (bool) {
        uint128 need = mClassMin[cls];
        if (need < PROVIDER_MIN) need = PROVIDER_MIN;
        return mRegistered[p] && !ms[p].banned && ms[p].staked >= need;
    }

    function _received(address token, uint256 amount) internal view returns (uint256) {
        return token == address(fot) ? amount - amount / 100 : amount;
    }

    function _sign(uint256 key, bytes32 digest) internal pure returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(key, digest);
        return abi.encodePacked(r, s, v);
    }

    /// @dev Arms the hook token for the next transfer: 0 off, 1 swallow, 2 propagate.
    function _arm(address token, uint256 seed, bool willTransfer) internal returns (uint8 mode) {
        if (token != address(hook) || !willTransfer) return 0;
        mode = uint8(seed % 3);
        hookMode = mode;
        innerSeed = uint256(keccak256(abi.encode(seed, "inner")));
        hook.setHook(address(this), mode);
    }

    function _disarm() internal {
        hookMode = 0;
        hook.setHook(address(this), 0);
    }

    /// @dev The handler's clock: forge does not carry a handler's vm.warp over to the next
    /// call of a sequence, so every operation first sets the time the sequence has reached.
    uint256 public clock;

    modifier counted() {
        calls++;
        vm.warp(clock);
        _;
    }

    // ------------------------------------------------------------ balances

    function deposit(uint256 actorSeed, uint256 tokenSeed, uint256 amount, uint256 hookSeed) external counted {
        _deposit(actorSeed, tokenSeed, amount, hookSeed);
    }

    function _deposit(uint256 actorSeed, uint256 tokenSeed, uint256 amount, uint256 hookSeed) internal {
        address who = _actor(actorSeed);
        address token = _token(tokenSeed);
        amount = amount % 7 == 0 ? 0 : amount % 2e12;
        PlainToken(token).mint(who, amount);
        vm.prank(who);
        PlainToken(token).approve(address(market), amount);
        bytes4 want = OK;
        if (mPaused) want = Pausable.EnforcedPause.selector;
        else if (amount == 0) want = ProviderRegistry.ZeroAmount.selector;
        else if (!mAllowed[token]) want = SpheronMarket.TokenNotAllowed.selector;
        if (!inHook && _arm(token, hookSeed, want == OK) == 2) want = ReentrancyGuard.ReentrancyGuardReentrantCall.selector;
        (bool ok,) = _exec("deposit", who, address(market), abi.encodeCall(SpheronMarket.deposit, (token, amount)), want);
        if (!inHook) _disarm();
        if (ok) mAv[token][who] += _received(token, amount);
    }

    function withdraw(uint256 actorSeed, uint256 tokenSeed, uint256 amount, uint256 hookSeed) external counted {
        address who = _actor(actorSeed);
        address token = _token(tokenSeed);
        uint256 av = mAv[token][who];
        amount = amount % 9 == 0 ? 0 : amount % (av + av / 8 + 2);
        bytes4 want = OK;
        if (amount == 0) want = ProviderRegistry.ZeroAmount.selector;
        else if (av < amount) want = SpheronMarket.InsufficientBalance.selector;
        if (_arm(token, hookSeed, want == OK) == 2) want = ReentrancyGuard.ReentrancyGuardReentrantCall.selector;
        (bool ok,) = _exec("withdraw", who, address(market), abi.encodeCall(SpheronMarket.withdraw, (token, amount)), want);
        _disarm();
        if (ok) mAv[token][who] -= amount;
    }

    function transferBalance(uint256 actorSeed, uint256 toSeed, uint256 tokenSeed, uint256 amount) external counted {
        address who = _actor(actorSeed);
        address to = toSeed % 10 == 0 ? address(0) : _actor(toSeed / 10);
        address token = _token(tokenSeed);
        uint256 av = mAv[token][who];
        amount = amount % 9 == 0 ? 0 : amount % (av + av / 8 + 2);
        bytes4 want = OK;
        if (to == address(0)) want = SpheronMarket.ZeroAddress.selector;
        else if (amount == 0) want = ProviderRegistry.ZeroAmount.selector;
        else if (av < amount) want = SpheronMarket.InsufficientBalance.selector;
        (bool ok,) = _exec(
            "transferBalance", who, address(market), abi.encodeCall(SpheronMarket.transferBalance, (token, to, amount)), want
        );
        if (ok) {
            mAv[token][who] -= amount;
            mAv[token][to] += amount;
        }
    }

    function withdrawFees(uint256 tokenSeed, uint256 hookSeed) external counted {
        address token = _token(tokenSeed);
        bytes4 want = mFees[token] == 0 ? ProviderRegistry.ZeroAmount.selector : OK;
        if (_arm(token, hookSeed, want == OK) == 2) want = ReentrancyGuard.ReentrancyGuardReentrantCall.selector;
        (bool ok,) =
            _exec("withdrawFees", admin, address(market), abi.encodeCall(SpheronMarket.withdrawFees, (token, admin)), want);
        _disarm();
        if (ok) mFees[token] = 0;
    }

    // ------------------------------------------------------------ orders

    function createOrder(uint256 actorSeed, uint256 tokenSeed, uint256 priceSeed, uint256 shape) external counted {
        address who = actorSeed % 5 == 4 ? attacker : tenants[actorSeed % 3];
        address token = _token(tokenSeed);
        uint128 price = uint128(priceSeed % 13 == 0 ? 0 : priceSeed % 2e9);
        uint32 gpus = uint32(shape % 9);
        uint256 d = (shape >> 8) % 100;
        uint32 dur = d == 99 ? uint32(91 days) : uint32(d * 1 hours);
        uint256 w = (shape >> 40) % 50;
        uint32 window = w == 49 ? uint32(1 days + 1) : w < 25 ? uint32(w * 1 minutes) : uint32((w - 24) * 20 minutes);
        uint256 s = (shape >> 80) % 20;
        _createOrderWith(who, token, price, gpus, dur, window, s == 19 ? 8193 : s * 10);
    }

    /// @dev Creates an order (specLen 0: createOrder, else createOrderWithSpec); returns its
    /// id, or 0 where the call reverted as predicted.
    function _createOrderWith(
        address who,
        address token,
        uint128 price,
        uint32 gpus,
        uint32 dur,
        uint32 window,
        uint256 specLen
    ) internal returns (uint64) {
        bytes memory spec = new bytes(specLen);
        bool withSpec = specLen != 0;

        uint256 budget = uint256(price) * gpus * dur / 3600;
        bytes4 want = OK;
        if (mPaused) want = Pausable.EnforcedPause.selector;
        else if (withSpec && spec.length > 8192) want = SpheronMarket.SpecTooLong.selector;
        else if (gpus == 0) want = SpheronMarket.GpusMismatch.selector;
        else if (dur == 0 || dur > 90 days || window > 1 days) want = SpheronMarket.InvalidDuration.selector;
        else if (price == 0 || budget == 0) want = ProviderRegistry.ZeroAmount.selector;
        else if (!mAllowed[token]) want = SpheronMarket.TokenNotAllowed.selector;
        else if (mAv[token][who] < budget) want = SpheronMarket.InsufficientBalance.selector;
        bytes memory data = withSpec
            ? abi.encodeCall(SpheronMarket.createOrderWithSpec, (token, price, gpus, dur, window, spec))
            : abi.encodeCall(SpheronMarket.createOrder, (token, price, gpus, dur, window));
        (bool ok, bytes memory ret) = _exec("createOrder", who, address(market), data, want);
        if (!ok) return 0;
        uint64 id = mNext++;
        if (abi.decode(ret, (uint64)) != id) {
            unexpectedReverts++;
            lastBad = "createOrder: wrong id";
        }
        MOrder storage o = mo[id];
        o.tenant = who;
        o.token = token;
        o.gpus = gpus;
        o.bidDeadline = uint40(block.timestamp + window);
        o.state = 1;
        o.duration = dur;
        o.feeBps = mFeeBps[token];
        o.price = price;
        o.locked = uint128(budget);
        o.everLocked = uint128(budget);
        mAv[token][who] -= budget;
        mLk[token][who] += budget;
        return id;
    }

    function lockFunds(uint256 actorSeed, uint256 tokenSeed, uint256 amount) external counted {
        address who = tenants[actorSeed % 3];
        address token = _token(tokenSeed);
        uint256 av = mAv[token][who];
        uint128 amt = uint128(amount % 11 == 0 ? 0 : amount % (av / 4 + 2));
        bytes4 want = OK;
        if (mPaused) want = Pausable.EnforcedPause.selector;
        else if (amt == 0) want = ProviderRegistry.ZeroAmount.selector;
        else if (!mAllowed[token]) want = SpheronMarket.TokenNotAllowed.selector;
        else if (av < amt) want = SpheronMarket.InsufficientBalance.selector;
        (bool ok,) = _exec("lockFunds", who, address(market), abi.encodeCall(SpheronMarket.lockFunds, (token, amt)), want);
        if (!ok) return;
        uint64 id = mNext++;
        MOrder storage o = mo[id];
        o.tenant = who;
        o.token = token;
        o.state = 1;
        o.feeBps = mFeeBps[token];
        o.price = type(uint128).max;
        o.locked = amt;
        o.everLocked = amt;
        mAv[token][who] -= amt;
        mLk[token][who] += amt;
    }

    function openLease(uint256 idSeed, uint256 actorSeed, uint256 provSeed, uint256 priceSeed) external counted {
        uint64 id = _id(idSeed);
        MOrder storage o = mo[id];
        address who = (actorSeed % 4 != 0 && o.state != 0) ? o.tenant : _actor(actorSeed);
        address provider = provSeed % 8 == 7 ? address(0) : _actor(provSeed);
        uint128 price = uint128(priceSeed % 13 == 0 ? 0 : priceSeed % 2e9);
        uint32 gpus = uint32((priceSeed >> 64) % 5);
        bytes4 want = OK;
        if (mPaused) want = Pausable.EnforcedPause.selector;
        else if (o.state == 0) want = SpheronMarket.UnknownOrder.selector;
        else if (who != o.tenant) want = SpheronMarket.NotTenant.selector;
        else if (o.state != 1 || o.bidDeadline != 0) want = SpheronMarket.WrongState.selector;
        else if (provider == address(0)) want = SpheronMarket.ZeroAddress.selector;
        else if (price == 0) want = ProviderRegistry.ZeroAmount.selector;
        else if (price > o.price) want = SpheronMarket.BidAboveCeiling.selector;
        else if (gpus == 0) want = SpheronMarket.GpusMismatch.selector;
        (bool ok,) = _exec(
            "openLease", who, address(market), abi.encodeCall(SpheronMarket.openLease, (id, provider, price, gpus)), want
        );
        if (!ok) return;
        o.duration = uint32(90 days);
        o.state = 3;
        o.gpus = gpus;
        o.start = uint40(block.timestamp);
        o.price = price;
        o.provider = provider;
        leases.push(id);
    }

    function cancelOrder(uint256 idSeed, uint256 actorSeed) external counted {
        uint64 id = _id(idSeed);
        MOrder storage o = mo[id];
        address who = (actorSeed % 4 != 0 && o.state != 0) ? o.tenant : _actor(actorSeed);
        bytes4 want = OK;
        if (o.state == 0) want = SpheronMarket.UnknownOrder.selector;
        else if (who != o.tenant) want = SpheronMarket.NotTenant.selector;
        else if (o.state != 1) want = SpheronMarket.WrongState.selector;
        (bool ok,) = _exec("cancelOrder", who, address(market), abi.encodeCall(SpheronMarket.cancelOrder, (id)), want);
        if (ok) _refund(o);
    }

    function expireOrder(uint256 idSeed, uint256 actorSeed) external counted {
        uint64 id = _id(idSeed);
        MOrder storage o = mo[id];
        address who = _actor(actorSeed);
        bytes4 want = OK;
        if (o.state == 0) want = SpheronMarket.UnknownOrder.selector;
        else if (o.state != 1 || o.gpus == 0) want = SpheronMarket.WrongState.selector;
        else if (block.timestamp <= uint256(o.bidDeadline) + MATCH_WINDOW) want = SpheronMarket.NotExpired.selector;
        (bool ok,) = _exec("expireOrder", who, address(market), abi.encodeCall(SpheronMarket.expireOrder, (id)), want);
        if (ok) _refund(o);
    }

    function _refund(MOrder storage o) internal {
        uint128 amount = o.locked;
        o.state = 5;
        o.locked = 0;
        mLk[o.token][o.tenant] -= amount;
        mAv[o.token][o.tenant] += amount;
    }

    // ------------------------------------------------------------ bids and matches

    function placeBid(uint256 provSeed, uint256 idSeed, uint256 priceSeed, uint256 modelSeed) external counted {
        _placeBid(provSeed, idSeed, priceSeed, modelSeed);
    }

    function _placeBid(uint256 provSeed, uint256 idSeed, uint256 priceSeed, uint256 modelSeed) internal {
        address who = provSeed % 7 == 6 ? attacker : providers[provSeed % 3];
        uint64 id = _id(idSeed);
        MOrder storage o = mo[id];
        uint256 ceiling = o.state == 0 ? 1e9 : (o.price > 4e9 ? 4e9 : o.price);
        uint96 price = uint96(priceSeed % 11 == 0 ? 0 : priceSeed % (ceiling + ceiling / 10 + 2));
        _bidAt(who, id, price, [A100, H100, TPU][modelSeed % 3]);
    }

    function _bidAt(address who, uint64 id, uint96 price, bytes32 model) internal returns (bool) {
        MOrder storage o = mo[id];
        uint8 cls = mClass[model];
        bytes4 want = OK;
        if (mPaused) want = Pausable.EnforcedPause.selector;
        else if (o.state == 0) want = SpheronMarket.UnknownOrder.selector;
        else if (o.state != 1 || o.gpus == 0) want = SpheronMarket.WrongState.selector;
        else if (block.timestamp > o.bidDeadline) want = SpheronMarket.BidWindowClosed.selector;
        else if (price == 0) want = ProviderRegistry.ZeroAmount.selector;
        else if (price > o.price) want = SpheronMarket.BidAboveCeiling.selector;
        else if (!_canBid(who, cls)) want = SpheronMarket.ProviderNotStaked.selector;
        else if (!mb[id][who].placed && o.bidCount == 64) want = SpheronMarket.TooManyBids.selector;
        (bool ok,) =
            _exec("placeBid", who, address(market), abi.encodeCall(SpheronMarket.placeBid, (id, price, model)), want);
        if (!ok) return false;
        if (!mb[id][who].placed) o.bidCount++;
        mb[id][who] = MBid({price: price, cls: cls, placed: true});
        return true;
    }

    function withdrawBid(uint256 provSeed, uint256 idSeed) external counted {
        _withdrawBid(provSeed, idSeed);
    }

    function _withdrawBid(uint256 provSeed, uint256 idSeed) internal {
        address who = provSeed % 7 == 6 ? attacker : providers[provSeed % 3];
        uint64 id = _id(idSeed);
        MOrder storage o = mo[id];
        bytes4 want = OK;
        if (o.state == 0) want = SpheronMarket.UnknownOrder.selector;
        else if (o.state != 1) want = SpheronMarket.WrongState.selector;
        else if (block.timestamp > o.bidDeadline) want = SpheronMarket.BidWindowClosed.selector;
        else if (mb[id][who].price == 0) want = SpheronMarket.UnknownBid.selector;
        (bool ok,) = _exec("withdrawBid", who, address(market), abi.encodeCall(SpheronMarket.withdrawBid, (id)), want);
        if (ok) mb[id][who].price = 0;
    }

    struct MatchCall {
        uint64 id;
        address winner;
        uint32 version;
        address[] signers;
        bytes[] sigs;
        bytes4 sigWant;
    }

    /// @notice A quorum match: mode 0-3 the active operators in `mask` (often a real 2/3
    /// quorum), 4 any operators in `mask`, 5 a verifier among them, 6 a signature over
    /// another result, 7 signers out of order.
    function submitMatch(uint256 idSeed, uint256 winnerSeed, uint256 sigSeed) external counted {
        _submitMatch(idSeed, winnerSeed, sigSeed);
    }

    function _submitMatch(uint256 idSeed, uint256 winnerSeed, uint256 sigSeed) internal {
        _submitMatchAt(_id(idSeed), winnerSeed, sigSeed);
    }

    function _submitMatchAt(uint64 id, uint256 winnerSeed, uint256 sigSeed) internal returns (bool) {
        MatchCall memory c;
        c.id = id;
        MOrder storage o = mo[c.id];
        c.winner = winnerSeed % 8 == 7 ? attacker : providers[winnerSeed % 3];
        if (winnerSeed % 8 < 6) {
            // usually a provider that has a live bid
            for (uint256 i = 0; i < 3; ++i) {
                address p = providers[(winnerSeed + i) % 3];
                if (mb[c.id][p].price != 0) {
                    c.winner = p;
                    break;
                }
            }
        }
        c.version = uint32(winnerSeed >> 128) % 3;
        MBid memory b = mb[c.id][c.winner];
        if (!inHook && (sigSeed >> 4) % 4 != 0 && o.state == 1 && block.timestamp <= o.bidDeadline) {
            // usually wait for the bid deadline first (a time warp inside the operation)
            clock = uint256(o.bidDeadline) + 1 + (sigSeed >> 8) % 30 minutes;
            vm.warp(clock);
        }
        bytes4 want = OK;
        if (mPaused) want = Pausable.EnforcedPause.selector;
        else if (o.state == 0) want = SpheronMarket.UnknownOrder.selector;
        else if (o.state != 1 || o.gpus == 0) want = SpheronMarket.WrongState.selector;
        else if (block.timestamp <= o.bidDeadline) want = SpheronMarket.MatchTooEarly.selector;
        else if (block.timestamp > uint256(o.bidDeadline) + MATCH_WINDOW) want = SpheronMarket.MatchTooLate.selector;
        else if (b.price == 0) want = SpheronMarket.UnknownBid.selector;
        else if (!_canBid(c.winner, b.cls)) want = SpheronMarket.ProviderNotStaked.selector;
        _signMatch(c, o, b, sigSeed);
        if (want == OK) want = c.sigWant;
        (bool ok,) = _exec(
            "submitMatch",
            address(uint160(uint256(keccak256(abi.encode(sigSeed))))),
            address(market),
            abi.encodeCall(SpheronMarket.submitMatch, (c.id, c.winner, c.version, c.signers, c.sigs)),
            want
        );
        if (!ok) return false;
        matches++;
        o.state = 2;
        o.start = uint40(block.timestamp);
        o.price = b.price;
        o.provider = c.winner;
        ms[c.winner].active += 1;
        leases.push(c.id);
        return true;
    }

    function _signMatch(MatchCall memory c, MOrder storage o, MBid memory b, uint256 sigSeed) internal view {
        uint256 mode = sigSeed % 8;
        uint256 mask = (sigSeed >> 8) % 16;
        if (mode < 2) mask = 15;
        uint256 at = o.bidDeadline;
        // the signer set, keys alongside
        uint256[] memory keys = new uint256[](6);
        address[] memory addrs = new address[](6);
        uint256 n = 0;
        for (uint256 i = 0; i < 4; ++i) {
            if (mask & (1 << i) == 0) continue;
            if (mode < 4 && weightAt(operators[i], at) == 0) continue;
            keys[n] = opKeys[i];
            addrs[n] = operators[i];
            ++n;
        }
        if (mode == 5) {
            keys[n] = verKeys[0];
            addrs[n] = verifiers[0];
            ++n;
        }
        // sort ascending (descending for mode 7)
        for (uint256 i = 1; i < n; ++i) {
            for (uint256 j = i; j > 0; --j) {
                bool swap = mode == 7 ? addrs[j - 1] < addrs[j] : addrs[j - 1] > addrs[j];
                if (!swap) break;
                (addrs[j - 1], addrs[j]) = (addrs[j], addrs[j - 1]);
                (keys[j - 1], keys[j]) = (keys[j], keys[j - 1]);
            }
        }
        bytes32 digestOrder = o.state == 1 ? market.getOrder(c.id).bidsDigest : bytes32(0);
        uint64 seed = market.seedOf(c.id, digestOrder);
        bytes32 digest = ops.matchDigest(
            SpheronOperators.Match({
                orderId: c.id,
                bidsDigest: digestOrder,
                winner: c.winner,
                price: b.price,
                seed: seed,
                matcherVersion: c.version
            })
        );
        bytes32 wrong = ops.matchDigest(
            SpheronOperators.Match({
                orderId: c.id,
                bidsDigest: digestOrder,
                winner: c.winner,
                price: uint128(b.price) + 1,
                seed: seed,
                matcherVersion: c.version
            })
        );
        c.signers = new address[](n);
        c.sigs = new bytes[](n);
        uint256 signed = 0;
        c.sigWant = OK;
        for (uint256 i = 0; i < n; ++i) {
            c.signers[i] = addrs[i];
            c.sigs[i] = _sign(keys[i], mode == 6 ? wrong : digest);
            if (c.sigWant != OK) continue;
            if (mode == 7 && i > 0) c.sigWant = SpheronOperators.SignersNotSorted.selector;
            else if (mode == 6) c.sigWant = SpheronOperators.BadSignature.selector;
            else if (mp[addrs[i]].kind != 1) c.sigWant = SpheronOperators.SignerNotRegistered.selector;
            else if (weightAt(addrs[i], at) == 0) c.sigWant = SpheronOperators.SignerNotRegistered.selector;
            else signed += weightAt(addrs[i], at);
        }
        if (c.sigWant == OK) {
            uint256 total = totalAt(1, at);
            if (total == 0 || signed * 3 < total * 2) c.sigWant = SpheronMarket.QuorumNotReached.selector;
        }
    }

    function confirmStart(uint256 idSeed, uint256 actorSeed) external counted {
        _confirmStart(idSeed, actorSeed);
    }

    function _confirmStart(uint256 idSeed, uint256 actorSeed) internal {
        _confirmStartAt(_leaseId(idSeed), actorSeed);
    }

    function _confirmStartAt(uint64 id, uint256 actorSeed) internal returns (bool) {
        MOrder storage o = mo[id];
        address who = (actorSeed % 4 != 0 && o.provider != address(0)) ? o.provider : _actor(actorSeed);
        bytes4 want = OK;
        if (o.state == 0) want = SpheronMarket.UnknownOrder.selector;
        else if (o.state != 2) want = SpheronMarket.WrongState.selector;
        else if (who != o.provider) want = SpheronMarket.NotProvider.selector;
        else if (block.timestamp > uint256(o.start) + START_WINDOW) want = SpheronMarket.StartWindow.selector;
        (bool ok,) = _exec("confirmStart", who, address(market), abi.encodeCall(SpheronMarket.confirmStart, (id)), want);
        if (!ok) return false;
        o.state = 3;
        o.start = uint40(block.timestamp);
        return true;
    }

    function cancelUnstarted(uint256 idSeed, uint256 actorSeed) external counted {
        uint64 id = _leaseId(idSeed);
        MOrder storage o = mo[id];
        address who = _actor(actorSeed);
        if (o.state == 2 && (actorSeed >> 8) % 3 != 0 && block.timestamp <= uint256(o.start) + START_WINDOW) {
            // usually let the start window lapse first (a time warp inside the operation)
            _warpTo(uint256(o.start) + START_WINDOW + 1 + (actorSeed >> 16) % 1 hours);
        }
        bytes4 want = OK;
        if (o.state == 0) want = SpheronMarket.UnknownOrder.selector;
        else if (o.state != 2) want = SpheronMarket.WrongState.selector;
        else if (block.timestamp <= uint256(o.start) + START_WINDOW) want = SpheronMarket.StartWindow.selector;
        (bool ok,) =
            _exec("cancelUnstarted", who, address(market), abi.encodeCall(SpheronMarket.cancelUnstarted, (id)), want);
        if (!ok) return;
        ms[o.provider].active -= 1;
        _refund(o);
        okCount["cancelled.matched"]++;
    }

    function extendLease(uint256 idSeed, uint256 actorSeed, uint256 extraSeed) external counted {
        _extendLeaseAt(_leaseId(idSeed), actorSeed, extraSeed);
    }

    function _extendLeaseAt(uint64 id, uint256 actorSeed, uint256 extraSeed) internal {
        MOrder storage o = mo[id];
        address who = (actorSeed % 4 != 0 && o.state != 0) ? o.tenant : _actor(actorSeed);
        uint32 extra = uint32(extraSeed % 17 == 0 ? (extraSeed % 2 == 0 ? 0 : 91 days) : extraSeed % 48 hours);
        uint256 added = uint256(o.price) * o.gpus * extra / 3600;
        bytes4 want = OK;
        if (o.state == 0) want = SpheronMarket.UnknownOrder.selector;
        else if (who != o.tenant) want = SpheronMarket.NotTenant.selector;
        else if (o.state != 2 && o.state != 3) want = SpheronMarket.WrongState.selector;
        else if (extra == 0 || uint256(o.duration) + extra > 90 days) want = SpheronMarket.InvalidDuration.selector;
        else if (o.state == 3 && block.timestamp >= uint256(o.start) + o.duration) want = SpheronMarket.NotClosable.selector;
        else if (added == 0) want = ProviderRegistry.ZeroAmount.selector;
        else if (mAv[o.token][who] < added) want = SpheronMarket.InsufficientBalance.selector;
        (bool ok,) =
            _exec("extendLease", who, address(market), abi.encodeCall(SpheronMarket.extendLease, (id, extra)), want);
        if (!ok) return;
        mAv[o.token][who] -= added;
        mLk[o.token][who] += added;
        o.locked += uint128(added);
        o.everLocked += uint128(added);
        o.duration += extra;
        o.extended = true;
        okCount[o.state == 3 ? "extended.started" : "extended.matched"]++;
    }

    /// @notice The lifecycle in one operation: an open order with live bids (the newest one,
    /// or a fresh valid order that 1-3 providers bid on), the clock past its bid deadline, a
    /// quorum match signed by every active operator, then usually the winner's confirmStart
    /// and sometimes the tenant's extension. Every step goes through the same predictions as
    /// the single operations, so a step that must fail (paused market, an unstaked or banned
    /// provider, a tenant short of funds, no active operator) is checked as such.
    function matchFlow(uint256 orderSeed, uint256 priceSeed, uint256 bidSeed, uint256 sigSeed) external counted {
        okCount["matchFlow"]++;
        uint64 id = mNext - 1;
        MOrder storage o = mo[id];
        bool reuse = id != 0 && o.state == 1 && o.gpus != 0 && o.bidCount != 0 && orderSeed % 4 == 0
            && block.timestamp <= uint256(o.bidDeadline) + MATCH_WINDOW;
        if (!reuse) {
            id = _createOrderWith(
                tenants[(orderSeed >> 8) % 3],
                pay[(orderSeed >> 16) % 4],
                uint128(1e4 + priceSeed % 5e8),
                uint32(1 + (orderSeed >> 24) % 4),
                uint32((1 + (orderSeed >> 32) % 48) * 1 hours),
                uint32((1 + (orderSeed >> 40) % 30) * 1 minutes),
                (orderSeed >> 48) % 4 == 0 ? 64 : 0
            );
            if (id == 0) return;
            o = mo[id];
        }
        if (block.timestamp <= o.bidDeadline) {
            uint256 ceiling = o.price > 4e9 ? 4e9 : o.price;
            uint256 nb = 1 + bidSeed % 3;
            for (uint256 i = 0; i < nb; ++i) {
                uint256 r = uint256(keccak256(abi.encode(bidSeed, i)));
                _bidAt(providers[(r >> 8) % 3], id, uint96(1 + r % ceiling), (r >> 16) % 3 == 0 ? H100 : A100);
            }
            _warpTo(uint256(o.bidDeadline) + 1 + (sigSeed >> 8) % 30 minutes);
        }
        // mode 0 or 1: every active operator signs; the winner has a live bid where any does
        uint256 w = (bidSeed >> 32) / 8 * 8 + (bidSeed >> 32) % 6;
        if (!_submitMatchAt(id, w, sigSeed / 8 * 8 + sigSeed % 2)) return;
        uint256 next = (sigSeed >> 64) % 4;
        if (next == 3) return;
        if (!_confirmStartAt(id, 1)) return;
        if (next == 2) _extendLeaseAt(id, 1, (sigSeed >> 72) % 24 hours + 1);
    }

    /// @notice One line of `name=count` for every operation and path that succeeded in this
    /// sequence (scripts/invariants.sh adds them up over all sequences).
    function coverageLine() external view returns (string memory line) {
        string[36] memory names = [
            string("deposit"), "withdraw", "transferBalance", "withdrawFees", "createOrder", "lockFunds",
            "openLease", "cancelOrder", "expireOrder", "placeBid", "withdrawBid", "submitMatch",
            "confirmStart", "cancelUnstarted", "extendLease", "closeLease", "settleBatch", "stake",
            "requestUnstake", "withdrawUnstaked", "slashWithVerdict", "reportEquivocation",
            "partyRegister", "partyRequestExit", "partyWithdrawExit", "pause", "unpause", "matchFlow",
            "extended.matched", "extended.started", "closed.matched", "closed.started", "closed.extended",
            "closed.ended", "closed.paid", "closed.openLease"
        ];
        line = string.concat("calls=", vm.toString(calls), " expectedReverts=", vm.toString(expectedReverts));
        line = string.concat(line, " reentries=", vm.toString(reentries), " cancelled.matched=", vm.toString(okCount["cancelled.matched"]));
        line = string.concat(line, " slashed.withLeases=", vm.toString(okCount["slashed.withLeases"]));
        for (uint256 i = 0; i < names.length; ++i) {
            uint256 n = okCount[names[i]];
            if (n != 0) line = string.concat(line, " ", names[i], "=", vm.toString(n));
        }
    }

    // ------------------------------------------------------------ settlement

    function _closableBy(MOrder storage o, address who) internal view returns (bool) {
        if (o.state != 2 && o.state != 3) return false;
        if (who == o.tenant || who == o.provider) return true;
        if (o.state == 2) return block.timestamp > uint256(o.start) + START_WINDOW;
        uint256 end = uint256(o.start) + o.duration;
        if (block.timestamp >= end) return true;
        return uint256(o.price) * o.gpus * (block.timestamp - o.start) / 3600 >= o.locked;
    }

    function _mClose(MOrder storage o) internal {
        uint256 cost = 0;
        if (o.state == 3) {
            uint256 end = uint256(o.start) + o.duration;
            uint256 until = block.timestamp < end ? block.timestamp : end;
            uint256 secs = until > o.start ? until - o.start : 0;
            cost = uint256(o.price) * o.gpus * secs / 3600;
            if (cost >= o.locked) cost = o.locked;
        }
        if (o.bidDeadline != 0) ms[o.provider].active -= 1;
        okCount[o.state == 3 ? (o.bidDeadline == 0 ? "closed.openLease" : "closed.started") : "closed.matched"]++;
        if (o.extended) okCount["closed.extended"]++;
        if (cost != 0) okCount["closed.paid"]++;
        if (o.state == 3 && block.timestamp >= uint256(o.start) + o.duration) okCount["closed.ended"]++;
        uint256 fee = cost * o.feeBps / 10_000;
        uint128 locked = o.locked;
        o.state = 4;
        o.locked = 0;
        o.paid = cost;
        if (cost > uint256(o.price) * o.gpus * o.duration / 3600 || cost > o.everLocked) overBilled = true;
        mLk[o.token][o.tenant] -= locked;
        mAv[o.token][o.tenant] += locked - cost;
        mAv[o.token][o.provider] += cost - fee;
        mFees[o.token] += fee;
        closes++;
    }

    function closeLease(uint256 idSeed, uint256 actorSeed) external counted {
        uint64 id = _leaseId(idSeed);
        MOrder storage o = mo[id];
        if (o.state == 3 && (actorSeed >> 128) % 4 == 0) {
            // sometimes let a started lease run out first (a time warp inside the operation)
            uint256 end = uint256(o.start) + o.duration;
            if (end > block.timestamp && end - block.timestamp <= 3 days) _warpTo(end + (actorSeed >> 136) % 1 hours);
        }
        uint256 r = actorSeed % 4;
        address who = r == 0 ? o.tenant : r == 1 ? o.provider : _actor(actorSeed >> 2);
        if (who == address(0)) who = _actor(actorSeed >> 2);
        bytes4 want = OK;
        if (o.state == 0) want = SpheronMarket.UnknownOrder.selector;
        else if (!_closableBy(o, who)) {
            want = (o.state != 2 && o.state != 3) ? SpheronMarket.WrongState.selector : SpheronMarket.NotClosable.selector;
        }
        (bool ok,) = _exec("closeLease", who, address(market), abi.encodeCall(SpheronMarket.closeLease, (id)), want);
        if (ok) _mClose(o);
    }

    function settleBatch(uint256 actorSeed, uint256 idsSeed) external counted {
        address who = _actor(actorSeed);
        uint256 n = idsSeed % 6;
        uint64[] memory ids = new uint64[](n);
        for (uint256 i = 0; i < n; ++i) {
            ids[i] = uint64(((idsSeed >> (8 * i + 8)) & 0xff) % (uint256(mNext) + 2));
        }
        (bool ok, bytes memory ret) =
            _exec("settleBatch", who, address(market), abi.encodeCall(SpheronMarket.settleBatch, (ids)), OK);
        if (!ok) return;
        uint256 closed = 0;
        for (uint256 i = 0; i < n; ++i) {
            MOrder storage o = mo[ids[i]];
            if (_closableBy(o, who)) {
                _mClose(o);
                ++closed;
            }
        }
        if (abi.decode(ret, (uint256)) != closed) {
            unexpectedSuccesses++;
            lastBad = "settleBatch: closed count differs from the model";
        }
    }

    // ------------------------------------------------------------ provider stake

    function stake(uint256 provSeed, uint256 amount) external counted {
        _stake(provSeed, amount);
    }

    function _stake(uint256 provSeed, uint256 amount) internal {
        address who = provSeed % 5 == 4 ? attacker : providers[provSeed % 3];
        uint256 av = mAv[address(sphn)][who];
        uint128 amt = uint128(amount % 9 == 0 ? 0 : amount % (av + av / 8 + 2));
        bytes4 want = OK;
        if (ms[who].banned) want = ProviderRegistry.Banned.selector;
        else if (amt == 0) want = ProviderRegistry.ZeroAmount.selector;
        else if (av < amt) want = SpheronMarket.InsufficientBalance.selector;
        (bool ok,) = _exec("stake", who, address(market), abi.encodeCall(ProviderRegistry.stake, (amt)), want);
        if (!ok) return;
        mAv[address(sphn)][who] -= amt;
        ms[who].staked += amt;
    }

    function requestUnstake(uint256 provSeed, uint256 amount) external counted {
        _requestUnstake(provSeed, amount);
    }

    function _requestUnstake(uint256 provSeed, uint256 amount) internal {
        address who = provSeed % 5 == 4 ? attacker : providers[provSeed % 3];
        uint128 st = ms[who].staked;
        uint128 amt = uint128(amount % 9 == 0 ? 0 : amount % 3 == 0 ? st : amount % (uint256(st) + st / 8 + 2));
        bytes4 want = OK;
        if (amt == 0) want = ProviderRegistry.ZeroAmount.selector;
        else if (amt > st) want = ProviderRegistry.InsufficientStake.selector;
        (bool ok,) =
            _exec("requestUnstake", who, address(market), abi.encodeCall(ProviderRegistry.requestUnstake, (amt)), want);
        if (!ok) return;
        ms[who].staked -= amt;
        ms[who].unbonding += amt;
        ms[who].releaseAt = uint40(block.timestamp) + UNBONDING;
    }

    function withdrawUnstaked(uint256 provSeed) external counted {
        _withdrawUnstaked(provSeed);
    }

    function _withdrawUnstaked(uint256 provSeed) internal {
        address who = provSeed % 5 == 4 ? attacker : providers[provSeed % 3];
        MStake storage s = ms[who];
        bytes4 want = OK;
        if (s.unbonding == 0) want = ProviderRegistry.NothingUnbonding.selector;
        else if (block.timestamp < s.releaseAt) want = ProviderRegistry.UnbondingNotOver.selector;
        else if (s.active != 0) want = ProviderRegistry.ActiveLeases.selector;
        (bool ok,) = _exec(
            "withdrawUnstaked", who, address(market), abi.encodeCall(ProviderRegistry.withdrawUnstaked, ()), want
        );
        if (!ok) return;
        mAv[address(sphn)][who] += s.unbonding;
        s.unbonding = 0;
    }

    /// @notice Slash on a verifiers' verdict. Modes: 0-3 valid (both verifiers), 4 one
    /// verifier, 5 a stranger's signature, 6 from the future, 7 expired, 8 zero amount,
    /// 9 the last used verdict again, 10 signatures swapped.
    function slashWithVerdict(uint256 provSeed, uint256 reporterSeed, uint256 amountSeed, uint256 modeSeed)
        external
        counted
    {
        uint256 mode = modeSeed % 11;
        if (mode == 9 && !haveLastVerdict) mode = 0;
        SpheronMarket.Verdict memory v;
        if (mode == 9) {
            v = lastVerdict;
        } else {
            v.provider = provSeed % 7 == 6 ? attacker : providers[provSeed % 3];
            // often the provider of the newest lease (slashing a provider with live leases)
            if (provSeed % 7 < 3 && leases.length != 0) v.provider = mo[leases[leases.length - 1]].provider;
            v.session = keccak256(abi.encode(modeSeed, nonce++));
            v.model = H100;
            v.amount = uint128(mode == 8 ? 0 : amountSeed % 100e18);
            v.issuedAt = uint64(block.timestamp - (amountSeed >> 128) % 1 days);
            if (mode == 6) v.issuedAt = uint64(block.timestamp + 1);
            if (mode == 7) v.issuedAt = uint64(block.timestamp - 1 days - 1);
        }
        bytes32 digest = market.verdictDigest(v);
        address reporter = _actor(reporterSeed);

        uint256[] memory keys = new uint256[](2);
        address[] memory who = new address[](2);
        uint256 n = 2;
        keys[0] = verKeys[0];
        keys[1] = mode == 5 ? strangerKey : verKeys[1];
        who[0] = verifiers[0];
        who[1] = mode == 5 ? stranger : verifiers[1];
        if (who[0] > who[1]) {
            (who[0], who[1]) = (who[1], who[0]);
            (keys[0], keys[1]) = (keys[1], keys[0]);
        }
        if (mode == 4) n = 1;
        address[] memory signers = new address[](n);
        bytes[] memory sigs = new bytes[](n);
        for (uint256 i = 0; i < n; ++i) {
            signers[i] = who[i];
            sigs[i] = _sign(keys[i], digest);
        }
        if (mode == 10) (sigs[0], sigs[1]) = (sigs[1], sigs[0]);

        MStake storage s = ms[v.provider];
        uint256 cap = (uint256(s.staked) + s.unbonding) * MAX_SLASH_BPS / 10_000;
        uint256 amount = v.amount < cap ? v.amount : cap;
        bytes4 want = OK;
        if (n < 2) want = SpheronMarket.BadVerdict.selector;
        else if (v.issuedAt > block.timestamp) want = SpheronMarket.BadVerdict.selector;
        else if (block.timestamp - v.issuedAt > 1 days) want = SpheronMarket.BadVerdict.selector;
        else if (v.amount == 0) want = ProviderRegistry.ZeroAmount.selector;
        else if (mVerdictUsed[digest]) want = SpheronMarket.VerdictUsed.selector;
        else if (mode == 10) want = SpheronOperators.BadSignature.selector;
        else {
            for (uint256 i = 0; i < n && want == OK; ++i) {
                if (mp[signers[i]].kind != 2 || weightAt(signers[i], block.timestamp) == 0) {
                    want = SpheronOperators.SignerNotRegistered.selector;
                }
            }
            if (want == OK && amount == 0) want = ProviderRegistry.InsufficientStake.selector;
        }
        (bool ok, bytes memory ret) = _exec(
            "slashWithVerdict",
            reporter,
            address(market),
            abi.encodeCall(SpheronMarket.slashWithVerdict, (v, signers, sigs)),
            want
        );
        if (!ok) return;
        mVerdictUsed[digest] = true;
        lastVerdict = v;
        haveLastVerdict = true;
        uint128 fromStaked = uint128(amount) < s.staked ? uint128(amount) : s.staked;
        uint128 rest = uint128(amount) - fromStaked;
        uint128 fromUnb = rest < s.unbonding ? rest : s.unbonding;
        s.staked -= fromStaked;
        s.unbonding -= fromUnb;
        uint256 slashed = uint256(fromStaked) + fromUnb;
        if (s.frauds < type(uint8).max) s.frauds += 1;
        if (s.frauds >= 3) s.banned = true;
        uint256 share = slashed * SLASH_REPORTER_BPS / 10_000;
        mAv[address(sphn)][reporter] += share;
        mFees[address(sphn)] += slashed - share;
        slashes++;
        if (s.active != 0) okCount["slashed.withLeases"]++;
        if (abi.decode(ret, (uint256)) != slashed) {
            unexpectedSuccesses++;
            lastBad = "slashWithVerdict: slashed amount differs from the model";
        }
    }

    // ------------------------------------------------------------ operators and verifiers

    function _partyOf(uint256 s) internal view returns (address who, uint256 key) {
        uint256 i = s % 6;
        if (i < 4) return (operators[i], opKeys[i]);
        return (verifiers[i - 4], verKeys[i - 4]);
    }

    /// @notice Two signatures by one key over different results: modes 0-3 an operator, 4 a
    /// verifier, 5 a stranger, 6 the same result twice, 7 results for different orders.
    function reportEquivocation(uint256 opSeed, uint256 reporterSeed, uint256 orderSeed, uint256 modeSeed)
        external
        counted
    {
        uint256 mode = modeSeed % 8;
        uint256 key = mode == 4 ? verKeys[opSeed % 2] : mode == 5 ? strangerKey : opKeys[opSeed % 4];
        address signer = vm.addr(key);
        SpheronOperators.Match memory a = SpheronOperators.Match({
            orderId: uint64(orderSeed % 6),
            bidsDigest: keccak256(abi.encode(orderSeed)),
            winner: providers[0],
            price: 1e6,
            seed: 7,
            matcherVersion: 1
        });
        SpheronOperators.Match memory b = SpheronOperators.Match({
            orderId: a.orderId,
            bidsDigest: a.bidsDigest,
            winner: a.winner,
            price: a.price,
            seed: a.seed,
            matcherVersion: a.matcherVersion
        }); // a copy: memory assignment would alias
        if (mode != 6) b.winner = providers[1 + orderSeed % 2];
        if (mode == 7) b.orderId = a.orderId + 1;
        bytes memory sa = _sign(key, ops.matchDigest(a));
        bytes memory sb = _sign(key, ops.matchDigest(b));
        address reporter = _actor(reporterSeed);
        MParty storage p = mp[signer];
        uint256 slashed = (uint256(p.staked) + p.unbonding) * EQ_SLASH_BPS / 10_000;
        bytes4 want = OK;
        if (mode == 6 || mode == 7) want = SpheronOperators.NotEquivocation.selector;
        else if (p.kind != 1) want = SpheronOperators.NotRegistered.selector;
        else if (mEquivocated[signer][a.orderId]) want = SpheronOperators.AlreadySlashed.selector;
        else if (slashed == 0) want = SpheronOperators.ZeroAmount.selector;
        (bool ok,) = _exec(
            "reportEquivocation",
            reporter,
            address(ops),
            abi.encodeCall(SpheronOperators.reportEquivocation, (a, sa, b, sb)),
            want
        );
        if (!ok) return;
        mEquivocated[signer][a.orderId] = true;
        uint256 fromStaked = slashed < p.staked ? slashed : p.staked;
        p.staked -= uint128(fromStaked);
        p.unbonding -= uint128(slashed - fromStaked);
        if (p.staked != 0 && p.staked < OP_MIN) {
            p.unbonding += p.staked;
            p.staked = 0;
            p.releaseAt = uint40(block.timestamp) + UNBONDING;
        }
        _setWeight(signer, 1, p.staked);
        mBurned += slashed - slashed * EQ_REPORTER_BPS / 10_000;
    }

    /// @notice Register or top up; mode 6 an empty endpoint, 7 the other kind.
    function partyRegister(uint256 partySeed, uint256 amountSeed, uint256 modeSeed) external counted {
        _partyRegister(partySeed, amountSeed, modeSeed);
    }

    function _partyRegister(uint256 partySeed, uint256 amountSeed, uint256 modeSeed) internal {
        (address who,) = _partyOf(partySeed);
        uint256 mode = modeSeed % 8;
        MParty storage p = mp[who];
        uint8 kind = p.kind;
        if (mode == 7) kind = kind == 1 ? 2 : 1;
        uint128 amount = uint128(amountSeed % 5 == 0 ? 0 : amountSeed % 300e18);
        sphn.mint(who, amount);
        vm.prank(who);
        sphn.approve(address(ops), amount);
        string memory endpoint = mode == 6 ? "" : "https://op.example";
        bytes4 want = OK;
        if (mode == 6) want = SpheronOperators.BadEndpoint.selector;
        else if (p.kind != 0 && p.kind != kind) want = SpheronOperators.KindMismatch.selector;
        else if (uint256(p.staked) + amount < OP_MIN) want = SpheronOperators.StakeTooLow.selector;
        (bool ok,) = _exec(
            "partyRegister",
            who,
            address(ops),
            abi.encodeCall(SpheronOperators.register, (SpheronOperators.Kind(kind), endpoint, amount)),
            want
        );
        if (!ok) return;
        p.kind = kind;
        p.staked += amount;
        _setWeight(who, kind, p.staked);
    }

    function partyRequestExit(uint256 partySeed, uint256 amountSeed) external counted {
        _partyRequestExit(partySeed, amountSeed);
    }

    function _partyRequestExit(uint256 partySeed, uint256 amountSeed) internal {
        (address who,) = _partyOf(partySeed);
        MParty storage p = mp[who];
        uint128 st = p.staked;
        uint128 amount = uint128(amountSeed % 7 == 0 ? 0 : amountSeed % 3 == 0 ? st : amountSeed % (uint256(st) + 2));
        bytes4 want = OK;
        if (p.kind == 0) want = SpheronOperators.NotRegistered.selector;
        else if (amount == 0) want = SpheronOperators.ZeroAmount.selector;
        else if (amount > st) want = SpheronOperators.InsufficientStake.selector;
        else if (st - amount != 0 && st - amount < OP_MIN) want = SpheronOperators.StakeTooLow.selector;
        (bool ok,) =
            _exec("partyRequestExit", who, address(ops), abi.encodeCall(SpheronOperators.requestExit, (amount)), want);
        if (!ok) return;
        p.staked = st - amount;
        p.unbonding += amount;
        p.releaseAt = uint40(block.timestamp) + UNBONDING;
        _setWeight(who, p.kind, p.staked);
    }

    function partyWithdrawExit(uint256 partySeed) external counted {
        (address who,) = _partyOf(partySeed);
        MParty storage p = mp[who];
        bytes4 want = OK;
        if (p.unbonding == 0 || block.timestamp < p.releaseAt) want = SpheronOperators.NotWithdrawable.selector;
        (bool ok,) =
            _exec("partyWithdrawExit", who, address(ops), abi.encodeCall(SpheronOperators.withdrawExit, ()), want);
        if (ok) p.unbonding = 0;
    }

    // ------------------------------------------------------------ time, pause, attacker

    function warp(uint256 seed) external counted {
        uint256 k = seed % 8;
        uint256 dt = k < 3 ? seed % 10 minutes : k < 6 ? seed % 2 hours : k < 7 ? seed % 2 days : seed % 9 days;
        clock += dt;
        vm.warp(clock);
    }

    function pauseToggle(uint256 seed) external counted {
        bool wantPause = seed % 4 == 0 ? mPaused : !mPaused; // 1/4: a redundant call that must revert
        bytes4 want = OK;
        if (wantPause && mPaused) want = Pausable.EnforcedPause.selector;
        if (!wantPause && !mPaused) want = Pausable.ExpectedPause.selector;
        // keep the market mostly unpaused: only pause 1 time in 3
        if (wantPause && !mPaused && seed % 3 != 0) return;
        bytes memory data = wantPause ? abi.encodeCall(SpheronMarket.pause, ()) : abi.encodeCall(SpheronMarket.unpause, ());
        (bool ok,) = _exec(wantPause ? "pause" : "unpause", admin, address(market), data, want);
        if (ok) mPaused = wantPause;
    }

    /// @notice The attacker calls a role-gated or party-gated function it has no right to.
    function attack(uint256 kindSeed, uint256 idSeed) external counted {
        uint256 k = kindSeed % 17;
        bytes memory data;
        address target = address(market);
        uint64 id = _id(idSeed);
        MOrder storage o = mo[id];
        if (k == 0) data = abi.encodeCall(SpheronMarket.configureToken, (address(usdc), true, 0));
        else if (k == 1) data = abi.encodeCall(SpheronMarket.withdrawFees, (address(sphn), attacker));
        else if (k == 2) data = abi.encodeCall(SpheronMarket.pause, ());
        else if (k == 3) data = abi.encodeCall(SpheronMarket.unpause, ());
        else if (k == 4) data = abi.encodeCall(ProviderRegistry.setTier, (providers[0], 7));
        else if (k == 5) data = abi.encodeCall(ProviderRegistry.setHardwareClass, (H100, 0, PROVIDER_MIN));
        else if (k == 6) data = abi.encodeWithSignature("grantRole(bytes32,address)", keccak256("PAUSER_ROLE"), attacker);
        else if (k == 7) data = abi.encodeWithSignature("grantRole(bytes32,address)", keccak256("TIER_ROLE"), attacker);
        else if (k == 8) data = abi.encodeWithSignature("beginDefaultAdminTransfer(address)", attacker);
        else if (k == 9) data = abi.encodeWithSignature("revokeRole(bytes32,address)", keccak256("PAUSER_ROLE"), admin);
        else if (k == 10) data = abi.encodeWithSignature("grantRole(bytes32,address)", bytes32(0), attacker);
        else if (k == 11) {
            if (o.provider == attacker) return;
            data = abi.encodeCall(SpheronMarket.confirmStart, (id));
        } else if (k == 12) {
            if (o.tenant == attacker || _closableBy(o, attacker)) return;
            data = abi.encodeCall(SpheronMarket.closeLease, (id));
        } else if (k == 13) {
            if (o.tenant == attacker) return;
            data = abi.encodeCall(SpheronMarket.cancelOrder, (id));
        } else if (k == 14) {
            if (o.tenant == attacker) return;
            data = abi.encodeCall(SpheronMarket.extendLease, (id, 3600));
        } else if (k == 15) {
            if (o.tenant == attacker) return;
            data = abi.encodeCall(SpheronMarket.openLease, (id, attacker, 1, 1));
        } else {
            target = address(ops);
            data = abi.encodeCall(SpheronOperators.requestExit, (1));
        }
        vm.prank(attacker);
        (bool ok,) = target.call(data);
        if (ok) {
            strangerSucceeded = true;
            strangerWhat = string.concat("attack kind ", _u(k), " on order ", _u(id));
        } else {
            expectedReverts++;
        }
    }

    // ------------------------------------------------------------ the re-entering token

    /// @notice Called by the hook token on every transfer while armed: re-enters some market
    /// (or operators) function as some actor. In propagate mode it re-enters a guarded
    /// function and bubbles its revert.
    function onTokenTransfer() external {
        require(msg.sender == address(hook), "not the hook token");
        reentries++;
        uint256 s = innerSeed;
        inHook = true;
        if (hookMode == 2 || s % 2 == 0) {
            address who = _actor(s >> 8);
            uint256 k = (s >> 16) % 13;
            address p = providers[(s >> 24) % 3];
            uint64 id = _id(s >> 32);
            uint64[] memory ids = new uint64[](2);
            ids[0] = id;
            ids[1] = id + 1;
            bytes memory data;
            if (k == 0) data = abi.encodeCall(SpheronMarket.withdraw, (address(usdc), 1));
            else if (k == 1) data = abi.encodeCall(SpheronMarket.transferBalance, (address(hook), attacker, 1));
            else if (k == 2) data = abi.encodeCall(SpheronMarket.closeLease, (id));
            else if (k == 3) data = abi.encodeCall(SpheronMarket.settleBatch, (ids));
            else if (k == 4) data = abi.encodeCall(SpheronMarket.cancelOrder, (id));
            else if (k == 5) data = abi.encodeCall(SpheronMarket.deposit, (address(usdc), 1));
            else if (k == 6) data = abi.encodeCall(SpheronMarket.createOrder, (address(hook), 1e6, 1, 3600, 0));
            else if (k == 7) data = abi.encodeCall(SpheronMarket.expireOrder, (id));
            else if (k == 8) data = abi.encodeCall(SpheronMarket.cancelUnstarted, (id));
            else if (k == 9) data = abi.encodeCall(SpheronMarket.extendLease, (id, 60));
            else if (k == 10) data = abi.encodeCall(SpheronMarket.lockFunds, (address(hook), 1));
            else if (k == 11) data = abi.encodeCall(SpheronMarket.openLease, (id, p, 1, 1));
            else {
                who = admin;
                data = abi.encodeCall(SpheronMarket.withdrawFees, (address(hook), admin));
            }
            (bool ok, bytes memory ret) = _exec(
                "reenter(guarded)", who, address(market), data, ReentrancyGuard.ReentrancyGuardReentrantCall.selector
            );
            inHook = false;
            if (!ok && hookMode == 2) {
                assembly {
                    revert(add(ret, 32), mload(ret))
                }
            }
            return;
        }
        // swallow mode: an unguarded function, with its own prediction and model update
        uint256 k2 = (s >> 16) % 9;
        uint256 a = uint256(keccak256(abi.encode(s, 1)));
        uint256 b = uint256(keccak256(abi.encode(s, 2)));
        uint256 c = uint256(keccak256(abi.encode(s, 3)));
        if (k2 == 0) _placeBid(a, b, c, s);
        else if (k2 == 1) _withdrawBid(a, b);
        else if (k2 == 2) _confirmStart(a, b);
        else if (k2 == 3) _requestUnstake(a, b);
        else if (k2 == 4) _stake(a, b);
        else if (k2 == 5) _submitMatch(a, b, c);
        else if (k2 == 6) _withdrawUnstaked(a);
        else if (k2 == 7) _partyRegister(a, b, c);
        else _partyRequestExit(a, b);
        inHook = false;
    }

    // ------------------------------------------------------------ the invariants

    function trackedCount() external view returns (uint256) {
        return tracked.length;
    }

    /// @notice Every invariant; reverts with the first one broken.
    function check() external view {
        if (!(unexpectedReverts == 0)) revert(string.concat("unexpected revert: ", lastBad));
        if (!(unexpectedSuccesses == 0)) revert(string.concat("unexpected success: ", lastBad));
        if (!(wrongErrors == 0)) revert(string.concat("wrong error: ", lastBad));
        if (!(!strangerSucceeded)) revert(string.concat("a stranger's gated call succeeded: ", strangerWhat));
        require(!overBilled, "a lease billed more than price x gpus x duration");

        // 1. the market's balance of each token is exactly what it owes; accounts match the model
        for (uint256 t = 0; t < 4; ++t) {
            address token = pay[t];
            uint256 owed = market.fees(token);
            if (!(owed == mFees[token])) revert(string.concat("fees differ from the model, token ", _u(t)));
            for (uint256 i = 0; i < tracked.length; ++i) {
                address acct = tracked[i];
                SpheronMarket.Account memory a = market.accountOf(token, acct);
                if (!(a.available == mAv[token][acct] && a.locked == mLk[token][acct])) revert(string.concat("account differs from the model: token ", _u(t), " account ", _u(i)));
                owed += uint256(a.available) + a.locked;
                if (token == address(sphn)) {
                    ProviderRegistry.Stake memory s = market.stakeOf(acct);
                    owed += uint256(s.staked) + s.unbonding;
                }
            }
            if (!(PlainToken(token).balanceOf(address(market)) == owed)) revert(string.concat("market balance != what it owes, token ", _u(t)));
        }
        // 2. provider stakes match the model
        for (uint256 i = 0; i < tracked.length; ++i) {
            address acct = tracked[i];
            ProviderRegistry.Stake memory s = market.stakeOf(acct);
            MStake storage m = ms[acct];
            if (!(s.staked == m.staked && s.unbonding == m.unbonding && s.activeLeases == m.active
                    && s.frauds == m.frauds && s.banned == m.banned)) revert(string.concat("stake differs from the model, account ", _u(i)));
        }
        // 3. orders: state and lock match the model; a lock never exceeds what the tenant locked
        require(market.nextOrderId() == mNext, "nextOrderId differs from the model");
        for (uint64 id = 1; id < mNext; ++id) {
            SpheronMarket.OrderView memory v = market.getOrder(id);
            MOrder storage o = mo[id];
            if (!(uint8(v.state) == o.state)) revert(string.concat("order state differs, order ", _u(id)));
            if (!(v.locked == o.locked)) revert(string.concat("order lock differs, order ", _u(id)));
            if (!(v.locked <= o.everLocked)) revert(string.concat("order holds more than its tenant locked ", _u(id)));
            if (o.state >= 2 && o.state <= 4) require(v.provider == o.provider, "lease provider differs");
        }
        // 4. SpheronOperators holds at least every party's stake and unbonding stake
        uint256 sum = 0;
        uint256 opTotal = 0;
        for (uint256 i = 0; i < parties.length; ++i) {
            address who = parties[i];
            SpheronOperators.Party memory p = ops.partyOf(who);
            MParty storage m = mp[who];
            if (!(uint8(p.kind) == m.kind && p.staked == m.staked && p.unbonding == m.unbonding)) revert(string.concat("party differs from the model ", _u(i)));
            require(ops.weightAt(who, uint48(clock)) == m.staked, "party weight differs from its stake");
            sum += uint256(p.staked) + p.unbonding;
            if (m.kind == 1) opTotal += m.staked;
        }
        require(sphn.balanceOf(address(ops)) >= sum, "SpheronOperators holds less SPHN than its stakes");
        require(sphn.balanceOf(address(ops)) == sum, "SpheronOperators' SPHN differs from its stakes");
        require(
            ops.totalWeightAt(SpheronOperators.Kind.Operator, uint48(clock)) == opTotal,
            "total operator weight differs"
        );
        require(sphn.balanceOf(BURN) == mBurned, "burned SPHN differs from the model");
    }
}
