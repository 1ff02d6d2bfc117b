"""A short version of bench/load.py: concurrent clients on loopback get answers and no errors."""
from bench.load import free_port, photos, rss_mb, run_load, start_shop


def test_concurrent_clients_get_answers(indexed_db, tmp_path):
    port = free_port()
    server = start_shop(str(indexed_db), "random", "resnet18", port)
    try:
        base = f"http://127.0.0.1:{port}"
        images = photos(4)
        api = run_load(base, "api", clients=4, seconds=4, images=images, model="resnet18", tmp=tmp_path)
        assert api.errors == [] and len(api.latencies) >= 4
        gradio = run_load(base, "gradio", clients=3, seconds=4, images=images, model="resnet18", tmp=tmp_path)
        assert gradio.errors == [] and len(gradio.latencies) >= 3
        assert server.poll() is None and rss_mb(server.pid) > 0
    finally:
        server.terminate()
        server.wait(20)
