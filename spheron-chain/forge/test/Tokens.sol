// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @notice An ordinary mintable ERC-20 with chosen decimals.
contract PlainToken is ERC20 {
    uint8 private immutable _dec;

    constructor(string memory n, string memory s, uint8 d) ERC20(n, s) {
        _dec = d;
    }

    function decimals() public view override returns (uint8) {
        return _dec;
    }

    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }
}

/// @notice 6 decimals; every transfer (not mint) burns 1% of the amount on the way.
contract FeeOnTransferToken is ERC20 {
    constructor() ERC20("Fee on transfer", "FOT") {}

    function decimals() public pure override returns (uint8) {
        return 6;
    }

    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    function _update(address from, address to, uint256 value) internal override {
        if (from != address(0) && to != address(0)) {
            uint256 burn = value / 100;
            super._update(from, address(0), burn);
            super._update(from, to, value - burn);
        } else {
            super._update(from, to, value);
        }
    }
}

interface ITransferHook {
    function onTokenTransfer() external;
}

/// @notice 6 decimals; every transfer (not mint) calls `hook.onTokenTransfer()`, which
/// re-enters some market function (chosen by the test handler). Mode 1 swallows the
/// callback's revert, mode 2 propagates it.
contract HookToken is ERC20 {
    address public hook;
    uint8 public mode;
    bool internal _busy;

    constructor() ERC20("Reentrant hook", "HOOK") {}

    function decimals() public pure override returns (uint8) {
        return 6;
    }

    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    function setHook(address hook_, uint8 mode_) external {
        hook = hook_;
        mode = mode_;
    }

    function _update(address from, address to, uint256 value) internal override {
        super._update(from, to, value);
        if (from != address(0) && to != address(0) && mode != 0 && !_busy) {
            _busy = true;
            (bool ok, bytes memory ret) = hook.call(abi.encodeCall(ITransferHook.onTokenTransfer, ()));
            _busy = false;
            if (!ok && mode == 2) {
                assembly {
                    revert(add(ret, 32), mload(ret))
                }
            }
        }
    }
}
