// Compile-time checks of apigw-ws.d.ts: `tsc -p tests/js/tsconfig.json` must pass, and the
// expect-error directives below prove that the declarations reject mistakes.
import ApigwWsDefault, {
  ApigwWsClient,
  type ClientOptions,
  type ConnectionState,
  TokenError,
  backoffDelay,
  connect,
} from '../../../apigw_ws_core/client/apigw-ws.js';

type ChatMessage = { type: 'chat_message'; user: string; text: string; room: string };
type Presence = { type: 'presence'; room: string; users: string[] };
type ServerMessage = ChatMessage | Presence;

const options: ClientOptions = {
  tokenUrl: '/ws/token/',
  channel: 'general',
  backoff: { initialDelay: 250, jitter: 1 },
  keepaliveMessage: null,
};
const client = new ApigwWsClient<ServerMessage>(options);

client.onMessage('chat_message', (m) => {
  const text: string = m.text;
  // @ts-expect-error a chat message has no `users`
  m.users;
  void text;
});
client.onMessage('presence', (m) => {
  const users: string[] = m.users;
  void users;
});
// @ts-expect-error not a message type the server sends
client.onMessage('typo', () => {});

client.on('open', ({ channel, reconnected }) => {
  const c: string | null = channel;
  const r: boolean = reconnected;
  void c;
  void r;
});
client.on('reconnecting', ({ attempt, delay }) => void (attempt + delay));
client.on('denied', ({ status, code }) => void `${status} ${code}`);
client.on('error', (e) => {
  if (e.kind === 'server') void e.code;
});
// @ts-expect-error unknown lifecycle event
client.on('opened', () => {});

const sent: boolean = client.send('chat_message', { text: 'hi' });
// @ts-expect-error the action must be a string
client.send(42);
const state: ConnectionState = client.state;
const ms: number = backoffDelay(3, { initialDelay: 100 });
const other = connect<ServerMessage>({ url: 'wss://example.test/prod' });
const d: typeof ApigwWsClient = ApigwWsDefault;
const denied: boolean = new TokenError('x', { status: 403 }).denied;
void client.connect().then(() => client.close(1000, 'bye'));
void [sent, state, ms, other, d, denied];
