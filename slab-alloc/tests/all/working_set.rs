//! working_set
