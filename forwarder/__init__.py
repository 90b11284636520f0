"""The sidecar: follows the apiserver's audit log and forwards it to the tailer."""
