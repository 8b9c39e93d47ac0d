import type { Router } from '@koa/router';

export function baseRoutes(router: Router): void {
  // The API version check every client makes first; authentication will hook in here.
  router.get('/v2/', (ctx) => {
    ctx.body = {};
  });
  router.get('/v2', (ctx) => {
    ctx.body = {};
  });
}
