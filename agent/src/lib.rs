//! The KubeKuma probe agent as a library: the `kubekuma` binary is a thin shell over it.

pub mod catalog;
pub mod cli;
