//! blaster
