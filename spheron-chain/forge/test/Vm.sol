// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @notice The few forge cheatcodes the invariant suite uses (forge-std's npm distribution
/// is unofficial and incomplete, so the interface is declared here).
interface Vm {
    function warp(uint256 newTimestamp) external;
    function prank(address msgSender) external;
    function sign(uint256 privateKey, bytes32 digest) external pure returns (uint8 v, bytes32 r, bytes32 s);
    function addr(uint256 privateKey) external pure returns (address);
    function label(address account, string calldata newLabel) external;
    function toString(uint256 value) external pure returns (string memory);
    function writeLine(string calldata path, string calldata data) external;
    function envOr(string calldata name, string calldata defaultValue) external view returns (string memory);
}

/// @notice What forge's invariant fuzzer reads from a test contract.
struct FuzzSelector {
    address addr;
    bytes4[] selectors;
}

abstract contract InvariantBase {
    Vm internal constant vm = Vm(address(uint160(uint256(keccak256("hevm cheat code")))));
    bool public IS_TEST = true;

    address[] internal _targetContracts;
    FuzzSelector[] internal _targetSelectors;

    function targetContracts() public view returns (address[] memory) {
        return _targetContracts;
    }

    function targetSelectors() public view returns (FuzzSelector[] memory) {
        return _targetSelectors;
    }
}
