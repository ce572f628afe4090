import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/** An error answer of a /kiln/ endpoint: its message, status and JSON body. */
export class KilnRequestError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly body: { [key: string]: unknown }
  ) {
    super(message);
  }
}

/**
 * Call a /kiln/ endpoint of this Jupyter server (token and XSRF headers come from
 * ServerConnection) and return its JSON answer.
 */
export async function requestKiln<T>(
  endpoint: string,
  init: RequestInit = {}
): Promise<T> {
  const settings = ServerConnection.makeSettings();
  const url = URLExt.join(settings.baseUrl, 'kiln', endpoint);
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (error) {
    throw new ServerConnection.NetworkError(error as TypeError);
  }
  const text = await response.text();
  let body: { [key: string]: unknown } = {};
  if (text.length > 0) {
    try {
      body = JSON.parse(text);
    } catch {
      body = { message: text };
    }
  }
  if (!response.ok) {
    let message =
      typeof body.message === 'string' && body.message
        ? body.message
        : `${response.status} ${response.statusText}`;
    if (response.status >= 500) {
      message = `Kiln server error ${response.status}: ${message} (details in the Jupyter server log)`;
    }
    throw new KilnRequestError(message, response.status, body);
  }
  return body as unknown as T;
}

export function postKiln<T>(endpoint: string, payload: unknown): Promise<T> {
  return requestKiln<T>(endpoint, {
    method: 'POST',
    body: JSON.stringify(payload)
  });
}
