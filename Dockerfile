# Wharf's container image: `wharf serve` as uid 10001, config at /etc/wharf/config.yml, data in
# /var/lib/wharf. Build (the legacy builder is enough; npm needs the network during the build):
#   docker build -t wharf .
#   docker build --network host --build-arg BASE_IMAGE=wharf-image-test/node-base:20 \
#     --build-arg NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt -t wharf .
# where no image can be pulled: scripts/build-base-image.sh makes that base from the host's node.

# Any Node >= 20 image with a POSIX shell; BUILD_IMAGE may differ (e.g. one with a compiler), the
# runtime image is always BASE_IMAGE.
ARG BASE_IMAGE=node:20-bookworm-slim
ARG BUILD_IMAGE=${BASE_IMAGE}

# ---- dependencies: only the lockfile decides this stage, so source changes reuse it ----
FROM ${BUILD_IMAGE} AS deps
WORKDIR /src
# Only for reaching the registry from the build (a mirror, a TLS-intercepting proxy's CA). Build args are
# seen by RUN in this stage alone; none reaches the runtime image. HTTP(S)_PROXY are Docker's own args.
ARG NPM_CONFIG_REGISTRY
ARG NODE_EXTRA_CA_CERTS
COPY package.json package-lock.json ./
# --ignore-scripts: no dependency needs its install script (ssh2 and cpu-features, under dockerode, would
# try to compile optional native code), so the build needs no compiler and runs the same everywhere.
RUN npm ci --ignore-scripts --no-audit --no-fund --no-update-notifier \
 && mkdir /prod \
 && cp -a package.json package-lock.json node_modules /prod/ \
 && cd /prod \
 && npm prune --omit=dev --ignore-scripts --no-audit --no-fund --no-update-notifier

# ---- build: TypeScript to dist/, and the image's config ----
FROM deps AS build
COPY tsconfig.json tsconfig.build.json ./
COPY config/ config/
COPY storage-drivers/ storage-drivers/
COPY src/ src/
# The image's config is the documented defaults with the data under /var/lib/wharf; checked here, so a
# build whose config no longer loads fails.
RUN npm run build \
 && mkdir -p /out/etc/wharf \
 && sed 's#^\(    rootdirectory:\) \./data #\1 /var/lib/wharf #' config/default.yaml >/out/etc/wharf/config.yml \
 && grep -q '^    rootdirectory: /var/lib/wharf ' /out/etc/wharf/config.yml \
 && node dist/src/cli.js config check --config /out/etc/wharf/config.yml \
  | grep -q '^    rootdirectory: /var/lib/wharf$'

# ---- runtime ----
FROM ${BASE_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=
ARG CREATED=
LABEL org.opencontainers.image.title="Wharf" \
      org.opencontainers.image.description="A container registry: the OCI Distribution API v1.1 on CNCF Distribution's storage layout" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"

# A fixed uid, so volumes and Kubernetes' runAsUser/fsGroup can name it. Written into /etc/passwd
# directly: busybox bases have no useradd, Debian ones no adduser -D.
RUN echo 'wharf:x:10001:10001:wharf:/var/lib/wharf:/usr/sbin/nologin' >>/etc/passwd \
 && echo 'wharf:x:10001:' >>/etc/group \
 && mkdir -p /var/lib/wharf \
 && chown 10001:10001 /var/lib/wharf \
 && chmod 750 /var/lib/wharf

WORKDIR /app
# Dependencies first: their layer stays the same from one Wharf version to the next.
COPY --from=deps /prod/node_modules ./node_modules
COPY --from=build /src/package.json ./
COPY --from=build /src/config/default.yaml ./config/default.yaml
COPY --from=build /src/dist ./dist
COPY scripts/container-healthcheck.mjs ./scripts/container-healthcheck.mjs
COPY --from=build /out/etc/wharf/config.yml /etc/wharf/config.yml

# Every subcommand (gc, du, token, ...) reads the same config as serve.
ENV NODE_ENV=production \
    WHARF_CONFIG=/etc/wharf/config.yml
USER 10001:10001
VOLUME /var/lib/wharf
EXPOSE 5000
# cli.js drains in-flight requests on SIGTERM (http.draintimeout, 10s by default) and exits 0;
# give `docker stop -t` / terminationGracePeriodSeconds more than that.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "/app/scripts/container-healthcheck.mjs"]
ENTRYPOINT ["node", "/app/dist/src/cli.js"]
CMD ["serve"]
