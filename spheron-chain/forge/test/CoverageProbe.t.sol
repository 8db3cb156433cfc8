// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;
import {MarketInvariantSetup} from "./MarketInvariants.t.sol";
// Reachability probes: each FAILS once its step has happened in some sequence (that is the
// point: a failure shows the fuzzer reaches the step). Not part of scripts/invariants.sh.
contract ProbeMatch is MarketInvariantSetup {
    function invariant_probe() public view { require(handler.matches() == 0, "reached: quorum match"); }
}
contract ProbeBid is MarketInvariantSetup {
    function invariant_probe() public view { require(handler.okCount("placeBid") == 0, "reached: bid"); }
}
contract ProbeStart is MarketInvariantSetup {
    function invariant_probe() public view { require(handler.okCount("confirmStart") == 0, "reached: start"); }
}
contract ProbeSlash is MarketInvariantSetup {
    function invariant_probe() public view { require(handler.slashes() == 0, "reached: verdict slash"); }
}
contract ProbeHook is MarketInvariantSetup {
    function invariant_probe() public view { require(handler.reentries() == 0, "reached: re-entry"); }
}
contract ProbeEquivocation is MarketInvariantSetup {
    function invariant_probe() public view { require(handler.okCount("reportEquivocation") == 0, "reached: equivocation"); }
}
