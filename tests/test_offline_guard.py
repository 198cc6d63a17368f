import socket

import pytest


def test_network_connection_is_refused():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with pytest.raises(RuntimeError, match="reach the network"):
        s.connect(("93.184.216.34", 80))
    s.close()


def test_hub_download_fails_offline(tmp_path):
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    with pytest.raises(LocalEntryNotFoundError):  # offline mode: nothing cached, no download allowed
        hf_hub_download("runwayml/stable-diffusion-v1-5", "model_index.json", cache_dir=tmp_path)
