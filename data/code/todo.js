/**
 * A small to-do list with priorities and due dates, kept in memory and
 * saved as JSON. Listeners are told about every change so a view can redraw.
 */

'use strict';

const fs = require('fs');

const PRIORITIES = ['low', 'normal', 'high'];

/** One thing to do. */
class Task {
  constructor(title, { priority = 'normal', due = null } = {}) {
    if (!PRIORITIES.includes(priority)) {
      throw new Error(`unknown priority: ${priority}`);
    }
    this.title = title;
    this.priority = priority;
    this.due = due ? new Date(due) : null;
    this.done = false;
  }

  isOverdue(now = new Date()) {
    return !this.done && this.due !== null && this.due < now;
  }
}

/** The list, with change notifications. */
class TodoList {
  constructor() {
    this.tasks = [];
    this.listeners = [];
  }

  onChange(listener) {
    this.listeners.push(listener);
    return () => {
      this.listeners = this.listeners.filter((l) => l !== listener);
    };
  }

  notify(event, task) {
    for (const listener of this.listeners) {
      listener(event, task);
    }
  }

  add(title, options) {
    const task = new Task(title, options);
    this.tasks.push(task);
    this.notify('add', task);
    return task;
  }

  complete(title) {
    const task = this.tasks.find((t) => t.title === title && !t.done);
    if (!task) {
      return false;
    }
    task.done = true;
    this.notify('complete', task);
    return true;
  }

  // Highest priority first, then earliest due date; undated tasks last.
  pending() {
    const rank = (t) => PRIORITIES.length - PRIORITIES.indexOf(t.priority);
    return this.tasks
      .filter((t) => !t.done)
      .sort((a, b) => {
        if (rank(a) !== rank(b)) return rank(a) - rank(b);
        if (a.due && b.due) return a.due - b.due;
        return a.due ? -1 : b.due ? 1 : 0;
      });
  }

  save(path) {
    fs.writeFileSync(path, JSON.stringify(this.tasks, null, 2));
  }

  static load(path) {
    const list = new TodoList();
    for (const raw of JSON.parse(fs.readFileSync(path, 'utf8'))) {
      const task = list.add(raw.title, { priority: raw.priority, due: raw.due });
      task.done = raw.done;
    }
    return list;
  }
}

function formatTask(task, now = new Date()) {
  const box = task.done ? '[x]' : '[ ]';
  const due = task.due ? ` (due ${task.due.toISOString().slice(0, 10)})` : '';
  const late = task.isOverdue(now) ? ' LATE' : '';
  return `${box} ${task.title} <${task.priority}>${due}${late}`;
}

function demo() {
  const list = new TodoList();
  list.onChange((event, task) => console.log(`${event}: ${task.title}`));
  list.add('water the plants', { priority: 'high' });
  list.add('file taxes', { due: '2024-04-15' });
  list.add('read a novel', { priority: 'low' });
  list.complete('water the plants');
  for (const task of list.pending()) {
    console.log(formatTask(task));
  }
}

module.exports = { Task, TodoList, formatTask };

if (require.main === module) {
  demo();
}
