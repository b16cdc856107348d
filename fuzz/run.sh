#!/usr/bin/env bash
# Coverage-guided fuzzing of every target in fuzz/fuzz_targets, each for a bounded time.
#
#   bash fuzz/run.sh                  # every target, FUZZ_SECONDS (30) each
#   FUZZ_SECONDS=600 bash fuzz/run.sh jws
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install --locked cargo-fuzz`). The corpus
# is seeded from the tests' fixtures and ../shared/vectors (when present) into fuzz/corpus,
# which is not committed; a crash leaves its input in fuzz/artifacts/TARGET and fails the run.
set -euo pipefail
cd "$(dirname "$0")"

SECONDS_EACH=${FUZZ_SECONDS:-30}
TARGETS=("$@")
if ((${#TARGETS[@]} == 0)); then
    TARGETS=(bearer_header www_authenticate jws redirect_uri cimd_client_id cimd_document token_request register_request)
fi
VECTORS=../../shared/vectors

seed() { # seed TARGET NAME CONTENT
    mkdir -p "corpus/$1"
    printf '%s' "$3" >"corpus/$1/seed-$2"
}

seed bearer_header 1 'Bearer abc.def-ghi_jkl~+/=='
seed bearer_header 2 'bearer   x'
seed bearer_header 3 'Basic dXNlcjpw'
seed www_authenticate 1 'Bearer error="insufficient_scope", scope="a b", resource_metadata="https://x/y"'
seed www_authenticate 2 $'a "quoted" \\ text\x00realm\x00https://mcp.example.com/.well-known/oauth-protected-resource'
seed redirect_uri 1 'http://127.0.0.1:53682/callback'
seed redirect_uri 2 'com.example.app:/oauth/cb'
seed redirect_uri 3 'https://app.example.com/cb?x=1'
seed cimd_client_id 1 'https://app.example.com/oauth/client.json'
seed cimd_client_id 2 'https://localhost:8443/client-metadata.json'
seed cimd_document 1 '{"client_id":"https://app.example.com/client.json","client_name":"App","redirect_uris":["https://app.example.com/cb","http://127.0.0.1/cb"],"token_endpoint_auth_method":"none","grant_types":["authorization_code","refresh_token"],"response_types":["code"]}'
# token_request: a selector byte (bit 0: an Authorization header up to the first NUL), then the body.
seed token_request 1 $'\x00grant_type=authorization_code&code=abc&code_verifier=v-0123456789012345678901234567890123456789&client_id=c&redirect_uri=http%3A%2F%2F127.0.0.1%3A53682%2Fcallback'
seed token_request 2 $'\x00grant_type=refresh_token&refresh_token=r&client_id=c&scope=mcp%3Aread'
seed token_request 3 $'\x01Basic Yzpz\x00grant_type=authorization_code&code=abc'
seed token_request 4 $'\x00grant_type=authorization_code&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion=a.b.c&code=x'
seed register_request 1 '{"client_name":"App","redirect_uris":["http://127.0.0.1:53682/callback"],"grant_types":["authorization_code","refresh_token"],"token_endpoint_auth_method":"none"}'
seed register_request 2 '{"redirect_uris":["https://app.example.com/cb","com.example.app:/cb"],"token_endpoint_auth_method":"client_secret_post","scope":"mcp:read","contacts":["a@example.com"]}'
for f in ../tests/fixtures/keys/*.pub.jwk; do
    [[ -e $f ]] && seed jws "jwk-$(basename "$f")" "$(head -c 4096 "$f")"
done
if [[ -d $VECTORS ]]; then
    # Wycheproof JWS vectors (compact serializations only) and the open-redirect corpus.
    python3 - "$VECTORS/wycheproof/json_web_signature_test.json" corpus/jws <<'PY'
import json, os, sys
data = json.load(open(sys.argv[1]))
n = 0
for group in data["testGroups"]:
    for test in group["tests"]:
        if isinstance(test.get("jws"), str):
            with open(os.path.join(sys.argv[2], "wycheproof-%d" % test["tcId"]), "w") as f:
                f.write(test["jws"])
            n += 1
print("jws seeds from wycheproof:", n)
PY
    i=0
    while IFS= read -r line; do
        i=$((i + 1))
        seed redirect_uri "openredirect-$i" "$line"
    done <"$VECTORS/oauth2-proxy/openredirects.txt"
fi

status=0
for target in "${TARGETS[@]}"; do
    echo "fuzzing $target for ${SECONDS_EACH}s"
    mkdir -p "corpus/$target"
    if ! cargo +nightly fuzz run -O "$target" "corpus/$target" -- \
        -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -print_final_stats=1 >"$target.log" 2>&1; then
        echo "fuzz target $target failed; its log:" >&2
        tail -40 "$target.log" >&2
        status=1
    else
        grep -E 'stat::number_of_executed_units|stat::new_units_added' "$target.log" | tr '\n' ' '
        echo
    fi
done
exit $status
