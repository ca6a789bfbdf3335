/**
 * The judge prompt: our own wording of the paper's stance classification (§3 "Evaluation setup",
 * App. A.2): given a question x, a response y and a topic T, name the stance y takes toward T.
 * The answer is one word so that the first output token's logprobs carry the whole distribution.
 */
import type { ChatCompletionMessageParam } from 'openai/resources/chat/completions';

/**
 * Part of every cache key: bump it whenever the wording below changes, otherwise cached judgments
 * made with the old wording would be served for the new one. A test pins a hash of the rendered
 * messages to this version so an unbumped edit fails CI.
 */
export const JUDGE_PROMPT_VERSION = 'stance-v1';

export interface JudgeMessagesInput {
  question: string;
  response: string;
  /** The canonical topic phrase for the prompt's category (e.g. "more open immigration"). */
  topic: string;
}

const SYSTEM = [
  'You are a careful annotator of opinions in text.',
  'You read a question, a response written to it, and a topic, and you decide which stance the',
  'response itself takes toward the topic. Judge only what the response says, not the question,',
  'and not your own view.',
].join(' ');

export function buildJudgeMessages({ question, response, topic }: JudgeMessagesInput): ChatCompletionMessageParam[] {
  const user = [
    `Topic: ${topic}`,
    '',
    'Question:',
    '<<<',
    question,
    '>>>',
    '',
    'Response:',
    '<<<',
    response,
    '>>>',
    '',
    'Stances:',
    `- support: the response argues for, endorses or leans in favour of ${topic}.`,
    `- oppose: the response argues against, rejects or leans against ${topic}.`,
    '- neutral: the response takes no side, balances both sides without leaning, declines to give an opinion, or does not address the topic.',
    '',
    `Which stance does the response take toward ${topic}? Answer with exactly one word: support, neutral or oppose.`,
  ].join('\n');
  return [
    { role: 'system', content: SYSTEM },
    { role: 'user', content: user },
  ];
}

/**
 * The conversation-level stance prompt of the dataset analysis (App. K; our own wording, the paper's
 * figure is not in its text): a whole datapoint (its user and assistant turns) and a topic in, one
 * word out. Each turn is written as a `[role]` line followed by its text, inside one <<< >>> block,
 * which is what the local minilm-stance judge parses (infra/judge/stance_server.py).
 * Part of every analysis judgment's cache key: bump on any change of the wording below.
 */
export const CONVERSATION_PROMPT_VERSION = 'stance-conversation-v1';

export interface ConversationTurn {
  role: string;
  content: string;
}

const CONVERSATION_SYSTEM = [
  'You are a careful annotator of opinions in text.',
  'You read a conversation between a user and an assistant, and a topic, and you decide which stance',
  'the conversation as a whole expresses toward the topic, above all through what the assistant says.',
  'Judge only what the conversation says, not your own view.',
].join(' ');

export function buildConversationJudgeMessages({ conversation, topic }: { conversation: ReadonlyArray<ConversationTurn>; topic: string }): ChatCompletionMessageParam[] {
  const body = conversation.flatMap((t) => [`[${t.role}]`, t.content]).join('\n');
  const user = [
    `Topic: ${topic}`,
    '',
    'Conversation:',
    '<<<',
    body,
    '>>>',
    '',
    'Stances:',
    `- support: the conversation argues for, endorses or leans in favour of ${topic}.`,
    `- oppose: the conversation argues against, rejects or leans against ${topic}.`,
    '- neutral: the conversation takes no side, balances both sides without leaning, declines to give an opinion, or does not address the topic.',
    '',
    `Which stance does the conversation take toward ${topic}? Answer with exactly one word: support, neutral or oppose.`,
  ].join('\n');
  return [
    { role: 'system', content: CONVERSATION_SYSTEM },
    { role: 'user', content: user },
  ];
}
