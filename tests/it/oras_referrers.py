"""The ORAS project's Python client (PyPI `oras`) against Berth: push an artifact, attach two
referrers to it with `oras.oci.Subject`, then list the referrers (all, and filtered by
artifactType) through the client's own authenticated session. Prints one JSON object for the
Rust test (tests/it/oras.rs) to check. Usage: oras_referrers.py HOST WORKDIR [USER PASSWORD]"""

import json
import os
import sys

import oras.oci
import oras.provider

host, workdir = sys.argv[1], sys.argv[2]
os.chdir(workdir)
if len(sys.argv) > 4:
    # Basic credentials on every request. (`login` would also write the machine's docker
    # config, which a test must not touch. oras-py's token backend keeps one token for every
    # scope, so after a pull-scoped token it cannot push: a limit of the client.)
    registry = oras.provider.Registry(hostname=host, insecure=True, auth_backend="basic")
    registry.auth.set_basic_auth(sys.argv[3], sys.argv[4])
else:
    registry = oras.provider.Registry(hostname=host, insecure=True)

MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def write(name, text):
    with open(name, "w") as f:
        f.write(text)
    return name


def raw_manifest(repo, reference):
    url = f"http://{host}/v2/{repo}/manifests/{reference}"
    resp = registry.do_request(url, "GET", headers={"Accept": MANIFEST})
    resp.raise_for_status()
    return resp.content, resp.headers["Docker-Content-Digest"]


write("base.txt", "the artifact\n")
write("sbom.json", '{"sbom": true}\n')
write("sig.txt", "a signature\n")
write("sbom-config.json", "{}")
write("sig-config.json", "{}")

registry.push(target=f"{host}/team/artifact:v1", files=["base.txt"], quiet=True)
body, digest = raw_manifest("team/artifact", "v1")
subject = oras.oci.Subject(mediaType=MANIFEST, digest=digest, size=len(body))

registry.push(
    target=f"{host}/team/artifact:sbom",
    files=["sbom.json"],
    manifest_config="sbom-config.json:application/vnd.example.sbom.v1+json",
    subject=subject,
    quiet=True,
)
registry.push(
    target=f"{host}/team/artifact:sig",
    files=["sig.txt"],
    manifest_config="sig-config.json:application/vnd.example.signature.v1+json",
    subject=subject,
    quiet=True,
)
_, sbom_digest = raw_manifest("team/artifact", "sbom")
_, sig_digest = raw_manifest("team/artifact", "sig")


def referrers(query=""):
    url = f"http://{host}/v2/team/artifact/referrers/{digest}{query}"
    resp = registry.do_request(url, "GET", headers={"Accept": "application/vnd.oci.image.index.v1+json"})
    resp.raise_for_status()
    return resp.json(), resp.headers.get("OCI-Filters-Applied")


everything, _ = referrers()
only_sigs, filters = referrers("?artifactType=application/vnd.example.signature.v1%2Bjson")
pulled = registry.pull(target=f"{host}/team/artifact:sig", outdir="pulled")
print(
    json.dumps(
        {
            "subject": digest,
            "sbom": sbom_digest,
            "sig": sig_digest,
            "all": everything,
            "sigs": only_sigs,
            "filters": filters,
            "pulled": [open(p).read() for p in pulled],
        }
    )
)
