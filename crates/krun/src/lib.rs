//! libkrun.so.1: the libkrun C ABI.
