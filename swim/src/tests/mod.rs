//! Scenario tests on the simulator.
